"""
### Drill: a whole region lost (Scenario C)

Beyond the plan's three quarterly drills, twice a year or by hand: in a drill environment it takes a region down
whole (every process of its hosts killed: databases, control-plane services, agents, its edge), then runs Scenario C
(the very tasks of `dr_scenario_c_region_outage`, built by the same function) in `drill` mode, and measures it from
evidence.

**Params**
- `mode`: `disruptive` only (a region outage cannot be rehearsed without one; the guard refuses `non_disruptive`).
- `path`: `multi_region` (fail over to the other region) or `single_region` (rebuild from backups); `auto` lets the
  runbook decide from what it finds.
- `region`: the region taken down (default `auto`: the one holding the control plane; after a drill the
  environment is whole the other way round, the standby control plane where the control plane was).

**Steps**: guard, take the region down, Scenario C, measure, put the environment back (always), report. Stop
conditions: before every step, production health is read from the prober's log.

**Measured**: RTO from the fault to the first customer request answered again (customer traffic resolving names
through DNS and reaching an edge, as customers do), and to the first acknowledged write;
RPO from the synthetic load's acknowledged writes across regions (those before the fault
missing from the recovered database); customer-visible availability before, during and after.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.capabilities import RegionFaults
from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.faults.region import InjectRegionOutageOperator
from rehearsal_airflow.operators.region_drills import MeasureRegionOutageOperator
from rehearsal_airflow.runbooks.region_outage import COMPONENT, GROUP_ID, SCENARIO_DAG_ID, region_outage

DAG_ID = "dr_drill_region_outage"
SCENARIO = "Region outage (Scenario C drill)"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
NO_NON_DISRUPTIVE = ("a region outage is rehearsed only by taking a region down: without it the runbook finds the "
                     "region serving and changes nothing")

with DAG(
    dag_id=DAG_ID,
    description="Drill: take a region down whole, run Scenario C, measure from customers' traffic",
    doc_md=__doc__,
    schedule="0 6 1 3,9 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "drill", "region"],
    params={
        "mode": Param("disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really take the region down (drill environments only)"),
        "path": Param("multi_region", enum=["auto", "multi_region", "single_region"],
                      description="multi_region: fail over; single_region: rebuild from backups"),
        "region": Param("auto", enum=["auto", "us-east-1", "us-west-2"],
                        description="the region taken down; auto: the one holding the control plane"),
    },
    default_args={"owner": "sre", "retries": 0, "queue": "recovery"},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        guard=DrillGuard(mode="{{ params.mode }}", fault=RegionFaults, harm="it takes a whole region down",
                         refuse_non_disruptive=NO_NON_DISRUPTIVE,
                         # Half the fleet is gone on purpose, and the apps that ran only there until the control plane re-places them
                         # (about two thirds of endpoints failing): under a fifth means the surviving region fails too.
                         stop_conditions=StopConditions(min_dataplane_success=0.2).to_dict(),
                         harms=("control_plane_api", "controlplane_db")),
        fault=lambda drill: InjectRegionOutageOperator(task_id="inject_region_outage", guard=drill.guard.output,
                                                       region="{{ params.region }}",
                                                       # a retry adopts the fault when its first try died with the
                                                       # region (its Airflow worker ran there)
                                                       **IDEMPOTENT),
        runbook=lambda drill: region_outage(mode="drill", failed_region=drill.fault.output["region"],
                                            path="{{ params.path }}", approve="auto"),
        rehearses=Rehearsed(SCENARIO_DAG_ID, GROUP_ID),
        measure=lambda drill: MeasureRegionOutageOperator(task_id="measure_region_outage", fault=drill.fault.output,
                                                          declaration=drill.runbook.declare.output,
                                                          verified=drill.runbook.verify.output,
                                                          shift=drill.runbook.shift.output,
                                                          guard=drill.guard.output, component=COMPONENT, **IDEMPOTENT),
        report_inputs=lambda drill: {"decision": drill.runbook.promote.choose.output,
                                     "approval": drill.runbook.approve.output,
                                     "recovery": drill.runbook.promote.recover.output},
    )
