"""A local S3-compatible object store for the tests: moto's server on a loopback port.

It speaks the S3 HTTP API, so the pipeline reaches it exactly as it reaches S3 in production:
`PATIENT_IMPORT_STORAGE=s3://<conn_id>@<bucket>/<prefix>`, opened by Airflow's
`ObjectStoragePath` through the amazon provider and s3fs, with the credentials and the endpoint
of an Airflow connection (here an `AIRFLOW_CONN_*` variable, which task processes inherit).
"""

from __future__ import annotations

import json
import logging
import os
import uuid

CONN_ID = "patient_import_storage"
BUCKET = "patient-files"
_KEY, _SECRET, _REGION = "test-key", "test-secret", "us-east-1"


class ObjectStore:
    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint: str | None = None

    def start(self) -> "ObjectStore":
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def stop(self) -> None:
        self._server.stop()

    def connection_env(self) -> dict[str, str]:
        """The Airflow connection the storage URL names, as an environment variable."""
        return {f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps({
            "conn_type": "aws", "login": _KEY, "password": _SECRET,
            "extra": {"endpoint_url": self.endpoint, "region_name": _REGION}})}

    def new_root(self) -> str:
        """A storage URL of its own (a fresh prefix) for one test."""
        return f"s3://{CONN_ID}@{BUCKET}/{uuid.uuid4().hex[:12]}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=_KEY,
                            aws_secret_access_key=_SECRET, region_name=_REGION)

    def keys(self, root: str) -> list[str]:
        """Every object key under a storage URL, relative to it."""
        prefix = root.split("@", 1)[1].split("/", 1)[1].rstrip("/") + "/"
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"][len(prefix):] for page in pages for item in page.get("Contents", []))


def environment_without_credentials() -> dict[str, str]:
    """boto must never find real credentials on the machine running the tests."""
    return {"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true"}
