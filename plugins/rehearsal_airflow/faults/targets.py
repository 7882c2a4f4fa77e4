"""Before any fault: what a drill is about to harm is the target its drill environment recorded, by identity
(``rehearsal.drills.targets``). Read through the same connections the fault uses, so a connection that points at
another platform is caught by what answers there, not by its name. Drill-only: runbooks never import this."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rehearsal.drills.targets import (
    API,
    DATABASE,
    SNAPSHOT_STORE,
    TargetMismatch,
    bucket_identity,
    database_identity,
    require_target,
)

if TYPE_CHECKING:
    from rehearsal.environment import Environment
    from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook
    from rehearsal_airflow.hooks.controlplane_services import ControlPlaneServicesHook
    from rehearsal_airflow.hooks.snapshot_store import SnapshotStoreHook


def _recorded(env: Environment, kind: str) -> dict | None:
    return (env.drill_targets or {}).get(kind)


def check_database(env: Environment, controlplane: ControlPlaneDbHook, address: str) -> dict:
    """The database at ``address`` (the control-plane database, as the admin connection sees it) is the recorded one.

    :raises TargetMismatch: another identity answers there, none was recorded, or it cannot be read"""
    from rehearsal.platform import split_address
    from rehearsal.postgres.connection import connect

    endpoint = controlplane.endpoint(*split_address(address))
    try:
        with connect(endpoint, connect_timeout=3, statement_timeout_ms=5000) as conn:
            found = database_identity(conn)
    except Exception as exc:  # noqa: BLE001 - an identity that cannot be read is not the recorded one
        raise TargetMismatch(f"refusing to harm the control-plane database at {address}: its identity cannot be read "
                             f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    require_target(DATABASE, f"{address} (database {endpoint.dbname})", _recorded(env, DATABASE), found, env.name)
    return found


def check_api(env: Environment, services: ControlPlaneServicesHook) -> dict:
    """The control-plane API the services connection names is the recorded one."""
    url = services.addresses.api
    try:
        found = services.api().identity()
    except Exception as exc:  # noqa: BLE001 - an identity that cannot be read is not the recorded one
        raise TargetMismatch(f"refusing to harm the control-plane API at {url}: its identity cannot be read ({exc})") from exc
    require_target(API, url, _recorded(env, API), found, env.name)
    return found


def check_snapshot_store(env: Environment, snapshots: SnapshotStoreHook) -> dict:
    """The primary snapshot bucket the environment names carries the recorded tag."""
    store = snapshots.primary
    try:
        found = bucket_identity(store.s3, store.bucket)
    except Exception as exc:  # noqa: BLE001 - an identity that cannot be read is not the recorded one
        raise TargetMismatch(f"refusing to harm the snapshot store s3://{store.bucket}: its identity cannot be read "
                             f"({exc})") from exc
    require_target(SNAPSHOT_STORE, f"s3://{store.bucket}", _recorded(env, SNAPSHOT_STORE), found, env.name)
    return found


def check_targets(env: Environment, harms: tuple[str, ...], controlplane: ControlPlaneDbHook | None = None,
                  services: ControlPlaneServicesHook | None = None, snapshots: SnapshotStoreHook | None = None,
                  primary: str | None = None) -> list[str]:
    """A disruptive drill's guard: every target the drill harms must be recorded, and every target the environment
    recorded must be what answers through the drill's connections (a staging Airflow holding copied production
    connections is refused here, before any fault). Returns what was checked, in words.

    :param harms: the kinds of target this drill's fault harms (``controlplane_db``, ``control_plane_api``,
        ``snapshot_store``)
    :param primary: the control-plane database's address as the drill found it"""
    recorded = dict(env.drill_targets or {})
    for kind in harms:
        if not recorded.get(kind):
            require_target(kind, "its recorded address", None, None, env.name)
    checked = []
    if DATABASE in recorded and controlplane is not None:
        found = check_database(env, controlplane, primary or "{}:{}".format(*controlplane.current_address()))
        checked.append(f"control-plane database: system identifier {found['system_identifier']}, marker {found['marker']}")
    if API in recorded and services is not None:
        checked.append(f"control-plane API: {check_api(env, services)['identity']}")
    if SNAPSHOT_STORE in recorded and snapshots is not None:
        found = check_snapshot_store(env, snapshots)
        checked.append(f"snapshot store: s3://{found['bucket']} tagged {found['marker']}")
    return checked
