"""The bodies of the sandbox's control-plane services and data plane (``docs/control-plane-services.md``): the API,
the scheduler, the reconciler, the host agents, the blackbox prober and the synthetic load. Their components (ports,
processes, start and stop) are in ``rehearsal_sandbox.components.control_plane``."""
