"""
### Scenario B: Postgres unrecoverable corruption

The plan's Scenario B, step by step: restore from backups with acceptable RPO. A bad migration, a bulk UPDATE
without a WHERE, a dropped table: corruption replicates, so promoting the standby brings the damage along. The
control plane is restored into a new cluster to just before the damage, and what was written since is repaired.

**Steps**
1. `declare_incident` (severity from measured impact), `establish_corruption_time`: the `corruption_time`
   given (refused when the audit log records damaging statements before it), or the earliest damaging statement
   (bulk UPDATE/DELETE, DROP TABLE) the audit triggers recorded.
2. `freeze_mutations`: deploys and config writes off (API `frozen`, reconciler paused), reads kept; proven by
   a refused mutation probe, or the run stops before anything is restored.
3. `keep_writes_since_corruption`: the acknowledged mutations the restore will lose, from the damaged
   cluster's audit log; `archive_wal_past_corruption`: a WAL segment past the damage reaches the archive.
4. `pick_last_good_backup`: the newest base backup before the damage that verifies.
5. `postgres_failover.*`: PITR into a new cluster to just before the damage (one approval in incident mode,
   showing the backup and the target), validated (schema version, reads, amcheck) and `validate_damage_gone`
   (dropped tables back, no damaging statement replayed) before anything is switched; archiving, service
   discovery switched, clients followed, redundancy rebuilt.
6. `repair_drift` while writes are still frozen (each lost write re-applied by its request id, reported), then
   `resume_writes` (a canary first, then read-write), `resume_reconciler_gradually`, `confirm_time_to_converge`.

**Params**: `mode` (required), `approve`, `corruption_time` (ISO-8601 with timezone; empty: found in the audit
log). The report names the backup and the target chosen, and why.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.postgres_corruption import (
    GROUP_ID,
    IDEMPOTENT,
    SCENARIO,
    SCENARIO_DAG_ID,
    postgres_corruption,
)

COMPONENT = "control_plane_api"

with DAG(
    dag_id=SCENARIO_DAG_ID,
    description="Scenario B: restore the control-plane Postgres to just before a corruption, switch, repair drift",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "scenario", "postgres", "control-plane"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval",
                         description="wait: in an incident, a person approves the restore before it starts"),
        "corruption_time": Param("", type="string", title="Corruption time",
                                 pattern=r"^(|\d{4}-\d\d-\d\dT[0-9:.]+(Z|[+-]\d\d:?\d\d))$",
                                 description="when the damage happened (ISO-8601 with timezone); empty: the earliest "
                                             "damaging statement in the audit log"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, SCENARIO_DAG_ID),
) as dag:
    scenario = postgres_corruption(mode="{{ params.mode }}", approve="{{ params.approve }}",
                                   corruption_time="{{ params.corruption_time }}", component=COMPONENT)
    report = RunReportOperator(
        task_id="write_scenario_report", scenario=SCENARIO, component=COMPONENT, gate=scenario.declare.output,
        mode="{{ params.mode }}", runbook={"dag_id": SCENARIO_DAG_ID, "group": GROUP_ID},
        decision=scenario.pick.output, approval=scenario.approve.output,
        recovery=scenario.failover.recover.output, **IDEMPOTENT)
    scenario.group >> report
