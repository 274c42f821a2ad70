"""Development tools, not the product: the fake-export generator, the demo export, the hostile
corpus and the test harnesses (PostgreSQL, a local S3-compatible server).

Used by the tests, `make run`'s demo step, scripts/ and bench/; never imported by include/, dags/ or
plugins/, and not in the image (.dockerignore is an allow-list without tools/ and tests/).
"""
