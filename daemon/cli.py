"""The `incidentd` command: run, check-config, migrate."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from daemon import __version__
from daemon import logging as daemon_logging
from daemon.config import Config, ConfigError, Overrides, env_variables, load_config
from daemon.secrets import resolve


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="incidentd",
        description="Monitoring alerts in, correlated and managed incidents out.",
        epilog="Settings can also come from the environment: " + ", ".join(env_variables()),
    )
    parser.add_argument("--version", action="version", version=f"incidentd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=None,
                       help="YAML configuration file (default: $INCIDENTD_CONFIG, else "
                            "./incidentd.yaml)")
        p.add_argument("--database-url", default=None,
                       help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB")

    run = sub.add_parser("run", help="run the daemon")
    with_config(run)
    run.add_argument("--listen", default=None, metavar="HOST:PORT", help="address to listen on")

    check = sub.add_parser("check-config", help="validate a configuration file; prints OK")
    check.add_argument("file", type=Path, nargs="?", default=None)

    mig = sub.add_parser("migrate", help="bring the database schema up to date")
    with_config(mig)

    rep = sub.add_parser(
        "replay", help="run recorded alerts through correlation offline; print the incidents")
    rep.add_argument("file", type=Path, help="JSON lines: {received_at, source, payload}")
    rep.add_argument("--config", type=Path, default=None,
                     help="configuration whose binding, correlation and integration settings "
                          "apply (default: built-in defaults)")
    rep.add_argument("--cmdb", type=Path, action="append", default=None,
                     help="CMDB file (YAML or JSON); repeatable; default: the config's files")
    rep.add_argument("--json", action="store_true", help="one incident JSON object per line")

    schema = sub.add_parser("schema", help="print a JSON Schema or the OpenAPI document")
    schema.add_argument("which", choices=["generic-alert", "openapi"])
    return parser


def _config_path(given: Path | None) -> Path | None:
    if given is not None:
        return given
    if os.environ.get("INCIDENTD_CONFIG"):
        return Path(os.environ["INCIDENTD_CONFIG"])
    default = Path("incidentd.yaml")
    return default if default.exists() else None


def _loader(args: argparse.Namespace) -> tuple[Callable[[], Config], str]:
    """How to read the configuration, now and at each reload (SIGHUP, POST /-/reload): the
    same file, the process environment and the same flags; and the name of its source."""
    path = _config_path(args.config)
    overrides = Overrides(listen=getattr(args, "listen", None), database_url=args.database_url)

    def load() -> Config:
        return load_config(path, overrides=overrides)

    return load, str(path or "<defaults>")


def _check_config(path: Path | None) -> int:
    path = _config_path(path)
    source = str(path or "<defaults>")
    try:
        config = load_config(path)
        problems = (_secret_file_problems(config, source) + _correlation_problems(config, source)
                    + _runbook_problems(config))
    except ConfigError as err:
        problems = err.problems
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1
    print("OK")
    return 0


def _secret_file_problems(config: Config, source: str) -> list[str]:
    """Secrets read from files must be readable now, not at the first request."""
    refs = [("api.tokens", r) for r in config.api.tokens]
    for i, integ in enumerate(config.integrations):
        auth = integ.auth
        where = f"integrations.{i}.auth"
        refs += [(f"{where}.bearer_tokens", r) for r in auth.bearer_tokens]
        refs += [(f"{where}.basic", b.password) for b in auth.basic]
        refs += [(f"{where}.routing_keys", r) for r in auth.routing_keys]
        if auth.hmac:
            refs += [(f"{where}.hmac.secrets", r) for r in auth.hmac.secrets]
    problems = []
    for where, ref in refs:
        if ref.file is None:
            continue
        try:
            resolve(ref)
        except ConfigError as err:
            problems.append(f"{source}: {where}: {err.problems[0]}")
    return problems


def _replay(args: argparse.Namespace) -> int:
    from daemon.itsm.cmdb import CmdbInvalid, read_files
    from daemon.replay import incident_line, replay, summary_line

    try:
        config = load_config(args.config) if args.config else Config()
        files = args.cmdb if args.cmdb is not None else config.cmdb.files
        cis = read_files(files) if files else []
        result = asyncio.run(replay(args.file, config=config, cis=cis))
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    except CmdbInvalid as err:
        for problem in err.describe():
            print(problem, file=sys.stderr)
        return 2
    for incident in result.incidents:
        if args.json:
            sys.stdout.buffer.write(incident_line(incident) + b"\n")
        else:
            print(summary_line(incident))
    if not args.json:
        print(f"{result.lines} lines, {result.alerts} alerts, "
              f"{len(result.incidents)} incidents", file=sys.stderr)
    return 0


def _print_schema(which: str) -> int:
    import json

    if which == "openapi":
        from daemon.api.openapi import document

        print(json.dumps(document(), indent=2))
    else:
        from daemon.receivers.generic import GenericBody

        print(json.dumps(GenericBody.model_json_schema(), indent=2))
    return 0


def _correlation_problems(config: Config, source: str) -> list[str]:
    """Binding rules must compile and the CMDB files must load, before the daemon starts."""
    from daemon.correlation.binding import compile_rules
    from daemon.itsm.cmdb import CmdbInvalid, read_files

    problems: list[str] = []
    try:
        compile_rules(config.correlation.binding)
    except ConfigError as err:
        problems += [f"{source}: {p}" for p in err.problems]
    try:
        read_files(config.cmdb.files)
    except CmdbInvalid as err:
        problems += err.describe()
    return problems


def _runbook_problems(config: Config) -> list[str]:
    """The runbook catalog must load whole: each problem names its file and key path."""
    if not config.runbooks.files:
        return []
    from daemon.runbooks.catalog import CatalogInvalid, read_catalog

    try:
        read_catalog(config.runbooks.files)
    except CatalogInvalid as err:
        return list(err.problems)
    return []


async def _migrate(config: Config) -> int:
    from daemon.store import Store, migrate

    store = Store.open(config.database.url)
    try:
        await migrate.upgrade(store)
        print(f"database at revision {await migrate.current_revision(store)}")
    finally:
        await store.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "schema":
        return _print_schema(args.which)
    if args.command == "replay":
        return _replay(args)
    loader, source = _loader(args)
    try:
        config = loader()
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    daemon_logging.configure(level=config.logging.level, fmt=config.logging.format)
    if args.command == "migrate":
        return asyncio.run(_migrate(config))
    from daemon.app import serve

    return asyncio.run(serve(config, loader=loader, source=source))


if __name__ == "__main__":
    sys.exit(main())
