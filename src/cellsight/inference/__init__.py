"""The inference seam: the line, the service and the PLC link hand images to one interface with two
backends, `local` (in-process, the default) and `ray` (Ray Serve replicas with dynamic batching).

Inference is a pure function of (model file hash, images): the same bytes give the same scores and
verdicts on either backend. Ray is imported only when the `ray` backend or a cluster is asked for.
"""
