"""The executor: run a plan's migration for real through libvirt and measure it.

``execute(plan, domain, src_uri, dst_uri)`` returns a :class:`~simkvm.model.result.Result`
with ``source='measured'`` in exactly the simulator's schema, so
``simkvm.compare.compare(simulate(plan), execute(plan, ...))`` is a join.

Modules by question:

- "how is it run, aborted, cleaned up?" -> :mod:`.run` (the story, top to bottom)
- "which flags and parameters does libvirt get?" -> :mod:`.flags`
- "can the destination take it, and where do its disks go?" -> :mod:`.prepare`
- "what did libvirt show while it ran, as rows?" -> :mod:`.monitor`
- "how did it end, and what did the network probe see?" -> :mod:`.measure`
- "what does a policy's action do through libvirt?" -> :mod:`.control`
- "what do Ctrl-C and SIGTERM do?" -> :mod:`.signals`
- "where is the VM now?" -> :mod:`.locate`; "what did a cut-short run leave?" -> :mod:`.journal`, :mod:`.recover`
- "how is a host reached?" -> :mod:`.connection`

The plan that predicts a testbed guest is the testbed's
(:mod:`simkvm.testbed.guestplan`): the executor runs on production hosts and
never imports the testbed.
"""
from .run import DEFAULT_MIGRATE_URI, execute

__all__ = ["execute", "DEFAULT_MIGRATE_URI"]
