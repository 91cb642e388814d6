"""Decodes the error details that `buf curl` prints base64-encoded.

buf curl ... 2>&1 | .venv/bin/python scripts/details.py
"""

import base64
import json
import sys

from google.protobuf import json_format
from google.rpc import error_details_pb2


def main() -> None:
    error = json.load(sys.stdin)
    print(f"{error['code']}: {error['message']}")
    for detail in error.get("details", []):
        message = getattr(error_details_pb2, detail["type"].rpartition(".")[2])()
        value = detail["value"]
        message.ParseFromString(base64.b64decode(value + "=" * (-len(value) % 4)))
        print(detail["type"], json_format.MessageToJson(message, indent=2))


if __name__ == "__main__":
    main()
