# incidentd: docker build -t incidentd . && docker run -p 8080:8080 incidentd
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    INCIDENTD_CONFIG=/etc/incidentd/incidentd.yaml \
    INCIDENTD_DATABASE_URL=sqlite+aiosqlite:////var/lib/incidentd/incidentd.db \
    INCIDENTD_SERVER_LISTEN=0.0.0.0:8080
RUN groupadd --system --gid 10001 incidentd \
 && useradd --system --uid 10001 --gid incidentd --home-dir /var/lib/incidentd incidentd \
 && mkdir -p /etc/incidentd /var/lib/incidentd \
 && chown incidentd:incidentd /var/lib/incidentd
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/incidentd.example.yaml /etc/incidentd/incidentd.yaml
COPY config/cmdb.example.yaml config/runbooks.example.yaml /etc/incidentd/
USER incidentd
WORKDIR /var/lib/incidentd
VOLUME ["/etc/incidentd", "/var/lib/incidentd"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz').status != 200)"
ENTRYPOINT ["incidentd"]
CMD ["run"]
