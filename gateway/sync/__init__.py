"""The Basic JSON sync: HTTPS documents reconciled onto LDAP (docs/sync.md).

    fetch.py       HTTPS with verified TLS, conditional GET, limits, redaction
    jsonstream.py  documents as a stream of parser events (ijson), never one tree
    records.py     what documents want (Want*, Desired) and what a run skips (Skip)
    document.py    the validation rules: every document into one desired state (pure)
    plan.py        desired + current -> creates, updates, replaces, deletes (pure)
    current.py     what LDAP holds for the listed domains (one paged search)
    apply.py       the plan onto LDAP, idempotent, several connections at once
    limits.py      the domains' limits: what fits is claimed, the rest skipped
    lock.py        the cluster-wide lock entry (one sync at a time anywhere)
    state.py       validators and run history, stored in LDAP
    runner.py      one run: lock, fetch, validate, plan, guard, apply, record
    job.py         the APScheduler job inside ``mailgate serve``
    export.py      the directory as a Basic JSON document

Ownership is recorded in each entry's ``mailgateOrigin``: ``sync`` entries
are the sync's to update and delete; ``api`` and hand-made entries (no
origin) are never deleted by it, and become ``sync`` when a document lists
their address (a takeover, logged).
"""
