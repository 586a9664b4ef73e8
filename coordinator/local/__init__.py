"""Local tooling: real ``redis-server`` processes managed in a data directory.

``embedded`` (one server), ``cluster`` (a 3-master Redis Cluster), ``sentinel`` (a
primary, a replica and Sentinels), ``stack`` (``coordinator up``: a server and a worker)
and ``demo`` (``coordinator demo``). Used by the tests, the CLI and ``verify``.
"""
