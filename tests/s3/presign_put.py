#!/usr/bin/env python3
"""Presigned PUT URLs made by botocore (SigV2 and SigV4), each sent as a plain HTTP PUT of
BODY to KEY of BUCKET; prints the two HTTP statuses.

usage: presign_put.py ENDPOINT ACCESS_KEY SECRET_KEY BUCKET KEY BODY
"""

import http.client
import sys
import urllib.parse

from awscli.botocore import session
from awscli.botocore.config import Config


def main():
    endpoint, access, secret, bucket, key, body = sys.argv[1:7]
    for version in ("s3", "s3v4"):
        client = session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            config=Config(signature_version=version),
        )
        url = urllib.parse.urlparse(client.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60))
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        connection.request("PUT", f"{url.path}?{url.query}", body=body.encode())
        print(connection.getresponse().status)


if __name__ == "__main__":
    main()
