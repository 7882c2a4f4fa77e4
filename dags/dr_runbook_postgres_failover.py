"""
### Runbook: Postgres failover (`docs/ops/runbooks/postgres-failover.md`)

What the on-call engineer triggers when the control-plane primary is gone or must go: from the UI (the form
below), the REST API, or another DAG. It works from what it can see (a dead primary, no heartbeat log, no
sandbox) through the connections `controlplane_admin`, `controlplane_db` and `aws_default`, and refuses only
what is unsafe, with the reason: promoting while the old primary accepts writes, a standby beyond the RPO, a
restore over the production cluster.

**Steps**
1. `assess_cluster`: which members answer, their roles, each standby's lag (streaming, last replayed commit,
   not behind the archive), whether the old primary still accepts writes, the newest archived WAL and backup.
2. `choose_recovery_path`: `auto` promotes a usable standby, otherwise PITR from the base backup and the
   archived WAL; the reason is recorded.
3. `approve_recovery`: in `incident` mode with `approve=wait`, the run waits once for a person (Required
   Actions page, REST API, or the terminal under `make run`), showing the path and its evidence. Reject ends the
   run with nothing changed.
4. `fence_old_primary`: read-only and sessions ended when it answers; "unreachable" recorded when not.
5. `recover_database`: promote the standby, or PITR into a new cluster (neutralized: it cannot archive into
   production, follow a primary, apply subscriptions or run preloaded workers).
6. `validate_recovered_database`: schema version, reads, row counts, amcheck.
7. `reenable_wal_archiving`: quarantined WAL handed to the archive, production's `archive_command` back, proven
   by a switched segment reaching the archive.
8. `switch_service_discovery`, 9. `confirm_clients_followed`: the record points at the new primary and clients
   of the application role commit there.
10. `rebuild_redundancy`: a new standby through the environment's provisioner (or "not rebuilt: no
    provisioner"), and a fresh base backup of the new timeline.

With `target=scratch` it restores a copy and stops after validation: production untouched (what a
non-disruptive drill runs, and a way to inspect a copy before deciding). The copy is left running for
inspection; the report names it.

**Params**: `mode` (`incident` or `drill`, required: it labels the run, and a drill that changes production's
topology is refused outside a drill environment), `path`, `recovery_target` (PITR: `latest`, an ISO-8601 time
or an LSN), `approve`, `target`. The report lands in `reports/dr_runbook_postgres_failover/<run_id>.json` and
the results database; a run that outlives the control plane's RTO misses its Deadline Alert.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.postgres_failover import GROUP_ID, IDEMPOTENT, RUNBOOK_DAG_ID, postgres_failover

COMPONENT = "control_plane_api"

with DAG(
    dag_id=RUNBOOK_DAG_ID,
    description="Runbook: fail the control-plane Postgres over to a standby, or restore it from backups",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "runbook", "postgres", "control-plane"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "path": Param("auto", type="string", enum=["auto", "promote_standby", "pitr"], title="Recovery path",
                      description="auto: promote a usable standby, else restore from backups"),
        "recovery_target": Param("latest", type="string", title="Recovery target (PITR only)",
                                 pattern=r"^(latest|[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}|\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:?\d\d))$",
                                 description="latest, an ISO-8601 time with timezone, or an LSN such as 0/3000060"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval",
                         description="wait: in an incident, a person approves before the first irreversible step"),
        "target": Param("production", type="string", enum=["production", "scratch"], title="Target",
                        description="scratch: restore a copy, validate it and stop; production is untouched"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, RUNBOOK_DAG_ID),
) as dag:
    runbook = postgres_failover(mode="{{ params.mode }}", path="{{ params.path }}", target="{{ params.target }}",
                                approve="{{ params.approve }}", recovery_target="{{ params.recovery_target }}",
                                component=COMPONENT)
    report = RunReportOperator(
        task_id="write_runbook_report", scenario="Postgres failover runbook", component=COMPONENT,
        gate=runbook.assess.output, mode="{{ params.mode }}", runbook={"dag_id": RUNBOOK_DAG_ID, "group": GROUP_ID},
        decision=runbook.choose.output, approval=runbook.approve.output, recovery=runbook.recover.output, **IDEMPOTENT)
    runbook.group >> report
