"""Online features: feature tables materialized into Redis, looked up by entity id when a model is served.

    store.py        the Redis layout, the client (timeouts, no retries), the pointer a load flips
    materialize.py  `mlops features materialize`: stream a table into a new version, flip, drop the old one
    lookup.py       lookups by entity id, with an in-process LRU cache whose entries expire (TTL)
    assemble.py     request rows + looked-up features -> the model's rows; the missing-feature policy

Imported only by the commands that use them: `redis` is an optional extra (`pip install 'mlops-cli[redis]'`).
"""
