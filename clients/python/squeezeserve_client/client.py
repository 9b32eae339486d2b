"""A thin helper over the generated stubs: one channel, the bearer token and routing header on every
call, ingest in chunks, generate (whole answer) and stream (one message per token), errors as
SqueezeserveError. Everything else is the generated messages (squeezeserve_client.pb)."""
import dataclasses
import time
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

import grpc

try:  # the official health stubs when installed: two copies of grpc.health.v1 cannot share a process
    from grpc_health.v1 import health_pb2, health_pb2_grpc
except ImportError:
    from squeezeserve_client._proto.grpc.health.v1 import health_pb2, health_pb2_grpc
from squeezeserve_client._proto.squeezeserve.v1 import squeezeserve_pb2 as pb
from squeezeserve_client._proto.squeezeserve.v1 import squeezeserve_pb2_grpc

CONTEXT_ID_HEADER = "x-context-id"  # what the Helm chart's Envoy hashes on (one replica per context)
CHUNK_BYTES = 1 << 20  # ingest content per message: far below gRPC's 4 MB default

# Refusals worth another try: overload (RESOURCE_EXHAUSTED, whose grpc-retry-pushback-ms says when)
# and a replica loading or restarting (UNAVAILABLE). Retried only before any answer arrived.
_RETRYABLE = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
_DEFAULT_BACKOFF_MS = 250


class SqueezeserveError(Exception):
    """A failed call: `code` is the grpc.StatusCode, `details` the server's message (INVALID_ARGUMENT
    names the field), `request_id` the id the server logged the call under, `retry_pushback_ms` the
    server's retry hint on RESOURCE_EXHAUSTED (None otherwise)."""

    def __init__(self, error: grpc.RpcError):
        self.code = error.code()
        self.details = error.details()
        initial = dict(error.initial_metadata() or ()) if hasattr(error, "initial_metadata") else {}
        trailing = dict(error.trailing_metadata() or ()) if hasattr(error, "trailing_metadata") else {}
        self.request_id = initial.get("x-request-id", "")
        pushback = trailing.get("grpc-retry-pushback-ms")
        self.retry_pushback_ms = int(pushback) if pushback is not None else None
        super().__init__(f"{self.code.name}: {self.details}")


@dataclasses.dataclass
class Generation:
    """A whole answer: the streamed messages put together."""
    text: str
    token_ids: List[int]
    logprobs: List[float]
    finish_reason: str  # "STOP", "LENGTH", "EOS", "CANCELLED"
    usage: pb.Usage
    stats: pb.AttentionStats


class Client:
    """squeezeserve at `target` ("HOST:PORT"). TLS when a CA or a client certificate is given;
    `token` is sent as "authorization: Bearer <token>"; `timeout` (seconds) is each attempt's deadline
    unless a call gives its own. A call refused with RESOURCE_EXHAUSTED or UNAVAILABLE is tried again up
    to `retries` times, after the server's grpc-retry-pushback-ms (250 ms without one)."""

    def __init__(self, target: str, *, token: Optional[str] = None, root_certificates: Optional[bytes] = None,
                 certificate_chain: Optional[bytes] = None, private_key: Optional[bytes] = None,
                 retries: int = 3, timeout: Optional[float] = None):
        options = [("grpc.max_receive_message_length", 64 << 20)]
        if root_certificates or certificate_chain:
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = squeezeserve_pb2_grpc.SqueezeserveStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._token = token
        self._timeout = timeout
        self._retries = retries

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- calls ----

    def health(self, service: str = "") -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING" (loading, draining), ... (needs no token)."""
        response = self._call(self._health.Check, health_pb2.HealthCheckRequest(service=service), None, None)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def wait_until_ready(self, timeout: float = 300) -> pb.ServerInfo:
        """Waits until the model has loaded (health SERVING), then returns the server's info."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health() == "SERVING":
                    return self.info()
            except SqueezeserveError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise TimeoutError(f"squeezeserve not ready after {timeout} s")
            time.sleep(0.2)

    def info(self) -> pb.ServerInfo:
        return self._call(self._stub.GetServerInfo, pb.GetServerInfoRequest(), None, None)

    def get(self, context_id: str) -> pb.ContextInfo:
        return self._call(self._stub.GetContext, pb.GetContextRequest(context_id=context_id), context_id, None)

    def list(self) -> List[pb.ContextInfo]:
        return list(self._call(self._stub.ListContexts, pb.ListContextsRequest(), None, None).contexts)

    def delete(self, context_id: str) -> None:
        self._call(self._stub.DeleteContext, pb.DeleteContextRequest(context_id=context_id), context_id, None)

    def ingest(self, text: Optional[str] = None, *, tokens: Optional[Sequence[int]] = None, context_id: str = "",
               index: Optional[dict] = None, no_bos: bool = False,
               on_progress: Optional[Callable[[pb.IngestContextProgress], None]] = None,
               timeout: Optional[float] = None) -> pb.ContextInfo:
        """Uploads a fixed context (text or token ids) in chunks; the server prefills and indexes it once.
        `index`: IndexOptions fields, e.g. {"sparsity_levels": [0.5, 0.9]}. Without `context_id` the
        server assigns a content address. Returns the stored context's summary."""
        if (text is None) == (tokens is None):
            raise ValueError("ingest: give exactly one of text and tokens")
        last = None
        for progress in self._streaming(lambda: self._stub.IngestContext(
                self._ingest_requests(text, tokens, context_id, index, no_bos), timeout=self._deadline(timeout),
                metadata=self._metadata(context_id))):
            if on_progress is not None:
                on_progress(progress)
            last = progress
        return last.context

    def stream(self, context_id: str, prompt: Optional[str] = None, *, tokens: Optional[Sequence[int]] = None,
               timeout: Optional[float] = None, **options) -> Iterator[pb.GenerateResponse]:
        """Streams the answer to `prompt` (or token ids) after the stored context: one GenerateResponse
        per token (text piece, token id, log-prob with logprobs=True); the last one carries
        finish_reason, usage and stats. Options: max_new_tokens, temperature, top_p, top_k, seed, stop,
        ignore_eos (sampling); mode ("dense"/"squeezed"), sparsity, hierarchical (attention); logprobs,
        priority."""
        request = _generate_request(context_id, prompt, tokens, **options)
        yield from self._streaming(lambda: self._stub.Generate(request, timeout=self._deadline(timeout),
                                                               metadata=self._metadata(context_id)))

    def generate(self, context_id: str, prompt: Optional[str] = None, **kwargs) -> Generation:
        """The whole answer of stream()."""
        text, token_ids, logprobs, last = [], [], [], pb.GenerateResponse()
        for response in self.stream(context_id, prompt, **kwargs):
            text.append(response.text)
            token_ids.extend(response.token_ids)
            logprobs.extend(response.logprobs)
            last = response
        return Generation("".join(text), token_ids, logprobs, pb.FinishReason.Name(last.finish_reason), last.usage,
                          last.stats)

    # ---- plumbing ----

    def _metadata(self, context_id: Optional[str]):
        metadata = []
        if self._token:
            metadata.append(("authorization", f"Bearer {self._token}"))
        if context_id:
            metadata.append((CONTEXT_ID_HEADER, context_id))
        return metadata

    def _deadline(self, timeout: Optional[float]) -> Optional[float]:
        return timeout if timeout is not None else self._timeout

    def _retry_after(self, error: grpc.RpcError, attempt: int) -> SqueezeserveError:
        """The error to raise, or None (after sleeping the server's hint) when another attempt is due."""
        failure = SqueezeserveError(error)
        if failure.code not in _RETRYABLE or attempt >= self._retries:
            return failure
        time.sleep((failure.retry_pushback_ms if failure.retry_pushback_ms is not None else _DEFAULT_BACKOFF_MS) / 1000)
        return None

    def _call(self, method, request, context_id, timeout):
        for attempt in range(self._retries + 1):
            try:
                return method(request, timeout=self._deadline(timeout), metadata=self._metadata(context_id))
            except grpc.RpcError as error:
                if (failure := self._retry_after(error, attempt)) is not None:
                    raise failure from None

    def _streaming(self, start_call):
        """Messages of a streaming call; retried while it fails before its first message."""
        for attempt in range(self._retries + 1):
            call = start_call()
            try:
                first = next(call)
            except StopIteration:
                return
            except grpc.RpcError as error:
                if (failure := self._retry_after(error, attempt)) is not None:
                    raise failure from None
                continue
            try:
                yield first
                yield from call
            except grpc.RpcError as error:
                raise SqueezeserveError(error) from None
            finally:
                call.cancel()  # the caller stopped reading (a no-op once the call has ended)
            return

    @staticmethod
    def _ingest_requests(text, tokens, context_id, index, no_bos) -> Iterable[pb.IngestContextRequest]:
        first = pb.IngestContextRequest(context_id=context_id, no_bos=no_bos, index=pb.IndexOptions(**(index or {})))
        if text is not None:
            data = text.encode("utf-8")
            # Cut on character boundaries: every message's text must be valid UTF-8.
            pieces, start = [], 0
            while start < len(data) or not pieces:
                end = min(start + CHUNK_BYTES, len(data))
                while end < len(data) and (data[end] & 0xC0) == 0x80:
                    end -= 1
                pieces.append(data[start:end].decode("utf-8"))
                start = end
            for i, piece in enumerate(pieces):
                request = first if i == 0 else pb.IngestContextRequest()
                request.text = piece
                yield request
        else:
            step = CHUNK_BYTES // 4
            for i in range(0, max(len(tokens), 1), step):
                request = first if i == 0 else pb.IngestContextRequest()
                request.tokens.ids.extend(tokens[i:i + step])
                yield request


def _generate_request(context_id, prompt, tokens, *, max_new_tokens=0, temperature=0.0, top_p=0.0, top_k=0, seed=0,
                      stop=(), ignore_eos=False, mode=None, sparsity=0.0, hierarchical=False, logprobs=False,
                      priority=0) -> pb.GenerateRequest:
    if (prompt is None) == (tokens is None):
        raise ValueError("generate: give exactly one of prompt and tokens")
    modes = {None: pb.AttentionOptions.MODE_UNSPECIFIED, "dense": pb.AttentionOptions.DENSE,
             "squeezed": pb.AttentionOptions.SQUEEZED}
    if mode not in modes:
        raise ValueError(f"generate: mode must be dense or squeezed, got {mode!r}")
    request = pb.GenerateRequest(
        context_id=context_id, include_logprobs=logprobs, priority=priority,
        sampling=pb.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                   seed=seed, stop=list(stop), ignore_eos=ignore_eos),
        attention=pb.AttentionOptions(mode=modes[mode], sparsity=sparsity, hierarchical=hierarchical))
    if prompt is not None:
        request.text = prompt
    else:
        request.tokens.ids.extend(tokens)
    return request
