"""HTTP routes: thin shells over :mod:`serving.state` and :mod:`serving.engine`."""
