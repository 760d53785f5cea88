"""Evidence packages: what was shown, what the models were, who decided, and the audit rows
that record it, in one zip that can be checked offline.

`review.evidence.build.build_package` writes the package of some items of a job or change
job (``vision review evidence JOB_OR_CHANGE --items IDS --out pkg.zip``);
`review.evidence.verify.verify_package` checks one (``vision review evidence verify
pkg.zip``) and names the first file that does not hold. The layout is in
`review.evidence.layout`.

What a check proves depends on what the verifier holds:

- **the package alone**: every file is the one the manifest lists (a single byte changed
  anywhere, the manifest included, is named); the audit rows link to each other (``prev_hash``)
  up to the chain head recorded at packaging; the decisions, the items' content and their
  change rows are the ones those audit rows record (fingerprints recomputed); the pictures
  are exactly the renderings of the GeoTIFF crops, whose georeferencing is the recorded
  windows'; the model cards name the models the rows name. This shows the package is
  internally consistent, *not* that it came from the service: anyone can write a
  consistent package, because checking the rows' HMACs needs the key.
- **plus an anchor** (``--anchor FILE``, heads the key holder kept elsewhere with ``vision
  review audit anchor``): the package's rows are the ones the service's chain held when an
  anchored head falls inside them (or equals the package's head). Rows before the first
  anchored one are still only linked, not authenticated.
- **plus the key** (``VISION_REVIEW_SECRET`` of the service, or its audit key file): every
  audit row's HMAC, the signed head and the package's own MAC (over the manifest, so over
  every file) are checked: the package was made by the service and nothing in it was
  changed since.
"""
