"""Python client of squeezeserve. `Client` is the helper (docs/clients/python.md); `pb` the generated
messages of squeezeserve.v1, for options the helper does not spell out."""
from squeezeserve_client._proto.squeezeserve.v1 import squeezeserve_pb2 as pb
from squeezeserve_client._proto.squeezeserve.v1 import squeezeserve_pb2_grpc as pb_grpc
from squeezeserve_client.client import CONTEXT_ID_HEADER, Client, Generation, SqueezeserveError

__all__ = ["Client", "Generation", "SqueezeserveError", "CONTEXT_ID_HEADER", "pb", "pb_grpc"]
