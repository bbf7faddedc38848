"""ITSM suite connectors: ServiceNow, Jira Service Management and a generic JSON tool,
behind one small interface (`base.Connector`), driven from the outbox (`sync`), taking
the suites' updates back (`inbound`)."""
