"""The executor: run a plan's migration for real through libvirt and measure it.

``execute(plan, domain, src_uri, dst_uri)`` returns a :class:`~simkvm.model.result.Result`
with ``source='measured'`` in exactly the simulator's schema, so
``simkvm.compare.compare(simulate(plan), execute(plan, ...))`` is a join.

Modules by question: "can the destination take it, and where do its disks
go?" -> :mod:`.prepare`; "what did libvirt show while it ran, as rows?" ->
:mod:`.monitor`; "how is it run, aborted, cleaned up?" -> :mod:`.run`. The plan that
predicts a testbed guest is the testbed's (:mod:`simkvm.testbed.guestplan`):
the executor runs on production hosts and never imports the testbed.
"""
from .run import DEFAULT_MIGRATE_URI, execute

__all__ = ["execute", "DEFAULT_MIGRATE_URI"]
