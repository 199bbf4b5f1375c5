"""The Teach demo's server side: projects of labelled photos, and training runs on them.

- ``store``: projects on disk, each an ordinary class-folder data set (``imgrec train
  PROJECT`` reads it) with its bookkeeping in a hidden ``.teach`` folder; names
  validated, quotas kept, every file written atomically.
- ``features``: a sample's backbone features, computed once in the server when it is
  added (a background thread), so that training has nothing left to compute.
- ``runs``: training runs, each in a child process (``worker``) that writes its
  progress as atomic JSON; the server reads and streams it, cancels by killing the
  child, and reports a run whose process is gone as interrupted (resumable).

The routes are in ``imgrec.web.routes.teach``.
"""
