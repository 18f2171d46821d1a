"""AWS KMS: the App key imported as an asymmetric SIGN_VERIFY key; only signatures leave it.

boto3 (the `kms` extra) is imported, and the client built, on the first call: importing
this module or loading a config never contacts AWS. Credentials come from boto3's default
chain (environment, web identity / IRSA, container or instance role); the gateway never
reads or keeps them itself. Certificates are checked as boto3 does (its CA bundle, or
`AWS_CA_BUNDLE`). Each call runs in a worker thread with short connect and read timeouts,
one retry, and an overall deadline. Any failure is `unavailable` (503, `Retry-After`) plus
one log line naming AWS's error code or botocore's exception class, never the error's
message (it can name principals and policies).

`Sign` uses `MessageType=RAW`: KMS hashes the JWT signing input itself (SHA-256).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from exchanger import __version__
from exchanger.config.model import KmsKey
from exchanger.errors import ConfigError
from exchanger.exchange.github.signers import unavailable

if TYPE_CHECKING:
    from types_boto3_kms.client import KMSClient
    from types_boto3_kms.type_defs import GetPublicKeyResponseTypeDef

log = logging.getLogger("exchanger.github")

#: RS256, the only algorithm GitHub accepts for App JWTs.
SIGNING_ALGORITHM: Final = "RSASSA_PKCS1_V1_5_SHA_256"
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
#: Attempts per call (botocore's "standard" retries: throttling, 5xx, connection errors).
MAX_ATTEMPTS = 2
#: A whole call, retries included; the worker thread ends by its own timeouts.
DEADLINE = 15.0

_T = TypeVar("_T")


class _Failed(Exception):
    """A KMS call failed: `code` is AWS's error code or the exception's class, safe to log.

    `problem` is set when the config, not AWS, is at fault (no region, no boto3)."""

    def __init__(self, code: str, problem: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.problem = problem


class KmsSigner:
    kind = "kms"

    def __init__(self, key: KmsKey) -> None:
        self._key = key
        self._client: KMSClient | None = None
        self._lock = threading.Lock()  # the client is built in a worker thread
        self._public: rsa.RSAPublicKey | None = None

    def __repr__(self) -> str:
        return f"KmsSigner(key_id={self._key.key_id!r})"

    async def sign(self, message: bytes) -> bytes:
        key_id = self._key.key_id
        try:
            reply = await self._call(
                "Sign",
                lambda kms: kms.sign(
                    KeyId=key_id,
                    Message=message,
                    MessageType="RAW",
                    SigningAlgorithm=SIGNING_ALGORITHM,
                ),
            )
        except _Failed:
            raise unavailable(self.kind) from None
        signature = reply.get("Signature")
        if not signature:
            log.warning("AWS KMS Sign with key %s answered no signature", key_id)
            raise unavailable(self.kind)
        return signature

    async def public_key(self) -> rsa.RSAPublicKey:
        """The key's public half from `GetPublicKey`, checked to be an RS256 signing key; cached.

        A key that cannot sign RS256 (wrong usage, not RSA) or a config AWS cannot be asked
        with (no region, no boto3) is a ConfigError; an AWS failure is `unavailable`.
        """
        if self._public is None:
            key_id = self._key.key_id
            try:
                reply = await self._call(
                    "GetPublicKey", lambda kms: kms.get_public_key(KeyId=key_id)
                )
            except _Failed as exc:
                if exc.problem is not None:
                    raise ConfigError([exc.problem]) from None
                raise unavailable(self.kind) from None
            self._public = self._checked(reply)
        return self._public

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _checked(self, reply: GetPublicKeyResponseTypeDef) -> rsa.RSAPublicKey:
        where = f"github.app.kms: the key {self._key.key_id}"
        usage = reply.get("KeyUsage")
        if usage != "SIGN_VERIFY":
            raise ConfigError([f"{where} has KeyUsage {usage}; it must be SIGN_VERIFY"])
        spec = reply.get("KeySpec") or reply.get("CustomerMasterKeySpec") or "of an unknown spec"
        try:
            public = load_der_public_key(reply.get("PublicKey", b""))
        except (ValueError, TypeError, UnsupportedAlgorithm):
            log.warning(
                "AWS KMS GetPublicKey for key %s answered no readable key", self._key.key_id
            )
            raise unavailable(self.kind) from None
        if not isinstance(public, rsa.RSAPublicKey):
            raise ConfigError([f"{where} is {spec}, not an RSA key (RSA_2048 or larger)"])
        if SIGNING_ALGORITHM not in reply.get("SigningAlgorithms", [SIGNING_ALGORITHM]):
            raise ConfigError([f"{where} cannot sign with {SIGNING_ALGORITHM} (RS256)"])
        return public

    async def _call(self, operation: str, call: Callable[[KMSClient], _T]) -> _T:
        """`call` on the client in a worker thread, within DEADLINE; failures are `_Failed`."""
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._run, call), DEADLINE)
        except TimeoutError:
            failure = _Failed(f"no answer within {DEADLINE:g} s")
        except _Failed as exc:
            failure = exc
        if failure.problem is not None:
            log.error("AWS KMS %s cannot be called: %s", operation, failure.problem)
        else:
            log.warning(
                "AWS KMS %s with key %s failed: %s", operation, self._key.key_id, failure.code
            )
        raise failure

    def _run(self, call: Callable[[KMSClient], _T]) -> _T:
        try:
            from botocore.exceptions import ClientError, NoRegionError
        except ImportError:
            raise _Failed(
                "ImportError",
                "github.app.kms: needs boto3, which is not installed "
                "(pip install 'exchanger[kms]')",
            ) from None
        try:
            return call(self._kms())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code") or "ClientError"
            raise _Failed(code) from None
        except NoRegionError:
            raise _Failed(
                "NoRegionError",
                "github.app.kms: no AWS region; set github.app.kms.region or AWS_REGION",
            ) from None
        except Exception as exc:  # any other botocore/urllib3 failure: its class only
            raise _Failed(type(exc).__name__) from None

    def _kms(self) -> KMSClient:
        """The KMS client, built on first use from boto3's default credential chain."""
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "kms",
                    region_name=self._key.region,
                    endpoint_url=self._key.endpoint_url,
                    config=Config(
                        connect_timeout=CONNECT_TIMEOUT,
                        read_timeout=READ_TIMEOUT,
                        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                        user_agent_extra=f"exchanger/{__version__}",
                    ),
                )
            return self._client

    def _close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
