"""Scale-out engines: the Ray engine (`distributed.engine`) needs the `distributed` extra and is imported only when asked for."""
