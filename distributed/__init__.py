"""Scale-out engines: the Ray engine (`distributed.engine`) and Ray Serve shards (`distributed.serving`) need the `distributed` extra and are imported only when asked for."""

import os

# simsearch calls ray.init itself (distributed.engine.connect). Ray's automatic init on any Ray call would otherwise start a
# second local cluster when a Serve handle's background thread polls after ray.shutdown(), leaving its agents orphaned (Ray 2.60).
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
