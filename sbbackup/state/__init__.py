"""The local state directory: what sbbackup keeps beside the catalog.

``StateDir`` (``dir``) is the one door the use cases use. Below it, one module per kind of
state: ``audit`` (the audit log), ``locks`` (flock locks), ``restores`` (restore records),
``drills`` (the last restore drill); and ``files``, the rules every state file and directory
obeys (ssh's StrictModes, ``O_NOFOLLOW``, atomic writes). ``storage.local`` builds on
``files`` too: nothing here imports storage.
"""

from .dir import StateDir

__all__ = ["StateDir"]
