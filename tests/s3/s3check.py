"""What the boto3 suites share: clients for the users a test names, and checks that an
operation fails with S3's error code (and status) as AWS answers it.

A suite is a module of functions named `check_*`, each taking the `Suite`; `run(module)`
calls them in order and exits non-zero, naming the failed checks, when any failed.
Clients come from the environment: S3_ENDPOINT, and USERS as `name:access:secret,...`.
"""

import os
import sys
import time
import traceback

import boto3
import botocore.config
import botocore.exceptions


class Suite:
    def __init__(self):
        self.endpoint = os.environ["S3_ENDPOINT"]
        self.users = {}
        for user in os.environ["USERS"].split(","):
            name, access, secret = user.split(":")
            self.users[name] = (access, secret)
        self.owner = next(iter(self.users))
        self.s3 = self.client(self.owner)
        self.prefix = os.environ.get("BUCKET_PREFIX", "b") + str(int(time.time() * 1000) % 100000)
        self.made = 0

    def client(self, user, **config):
        access, secret = self.users[user] if user else (None, None)
        settings = dict(
            retries={"max_attempts": 1},
            s3={"addressing_style": "path"},
            connect_timeout=10,
            read_timeout=60,
            **config,
        )
        if user is None:
            settings["signature_version"] = botocore.UNSIGNED
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=access or "unused",
            aws_secret_access_key=secret or "unused",
            config=botocore.config.Config(**settings),
        )

    def bucket(self, client=None, **create):
        """A new bucket's name, created by `client` (the owner's by default)."""
        self.made += 1
        name = f"{self.prefix}-{self.made}"
        (client or self.s3).create_bucket(Bucket=name, **create)
        return name


def fails(code, call, *args, status=None, **kwargs):
    """Calls `call`, which must fail with S3 error `code` (and HTTP `status`, if given)."""
    try:
        call(*args, **kwargs)
    except botocore.exceptions.ClientError as error:
        got = error.response["Error"]["Code"]
        got_status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        assert got == code, f"{call.__name__}: expected {code}, got {got}: {error}"
        assert status is None or got_status == status, (
            f"{call.__name__}: expected status {status}, got {got_status}"
        )
        return error.response
    raise AssertionError(f"{call.__name__} succeeded; expected {code}")


def run(module):
    suite = Suite()
    checks = [(n, f) for n, f in vars(module).items() if n.startswith("check_") and callable(f)]
    only = os.environ.get("CHECK")
    failed = []
    for name, check in checks:
        if only and only not in name:
            continue
        started = time.monotonic()
        try:
            check(suite)
        except Exception:
            traceback.print_exc()
            print(f"FAILED {name}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        print(f"ok {name} ({time.monotonic() - started:.1f} s)", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
