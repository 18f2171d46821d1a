"""A private SoftHSM2 token (Debian's `softhsm2`): a real PKCS#11 module for the signer's tests.

`SoftHsm.create` writes a SoftHSM2 config whose token directory is a test
directory, points `SOFTHSM2_CONF` at it (SoftHSM reads it when the module is
initialised, in this process and in every child), and initialises one token.
`import_key` puts an RSA key pair on it the way an operator would: the key as a
PKCS#8 PEM file, `softhsm2-util --import`, then the file deleted; `write_objects`
does the same with `pkcs11-tool --write-object` and DER files, one object at a time.
The paths of those files are kept in `imported_pems`, so a test can show that
they were gone before anything could have read them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

#: Debian's path of the SoftHSM2 module (package libsofthsm2, pulled in by softhsm2).
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
INSTALL = "scripts/install-test-deps.sh"


@dataclass
class SoftHsm:
    directory: Path
    conf: Path
    token_label: str
    user_pin: str
    so_pin: str
    module: str = MODULE
    imported_pems: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path, token_label: str = "exchanger-test") -> SoftHsm:
        """A config in `directory` with its own token directory, and one initialised token."""
        for program in ("softhsm2-util", "pkcs11-tool"):
            if shutil.which(program) is None:
                raise RuntimeError(f"{program} is not installed: run {INSTALL}")
        if not Path(MODULE).exists():
            raise RuntimeError(f"{MODULE} is missing (Debian package libsofthsm2): run {INSTALL}")
        tokens = directory / "tokens"
        tokens.mkdir(mode=0o700)
        conf = directory / "softhsm2.conf"
        conf.write_text(
            f"directories.tokendir = {tokens}\n"
            "objectstore.backend = file\n"
            "log.level = ERROR\n"
            "slots.removable = false\n",
            encoding="utf-8",
        )
        hsm = cls(
            directory=directory,
            conf=conf,
            token_label=token_label,
            user_pin=f"user-{secrets.token_hex(6)}",
            so_pin=f"so-{secrets.token_hex(6)}",
        )
        hsm.util(
            "--init-token", "--free", "--label", token_label,
            "--so-pin", hsm.so_pin, "--pin", hsm.user_pin,
        )  # fmt: skip
        return hsm

    @property
    def environ(self) -> dict[str, str]:
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def util(self, *args: str) -> str:
        """Run softhsm2-util against this config; its stdout."""
        done = subprocess.run(
            ["softhsm2-util", *args],
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"softhsm2-util {args[0]} failed: {done.stderr.strip()}")
        return done.stdout

    def tool(self, *args: str, login: bool = True) -> subprocess.CompletedProcess[str]:
        """Run pkcs11-tool on this token (logged in with the user PIN unless `login=False`)."""
        command = ["pkcs11-tool", "--module", self.module, "--token-label", self.token_label]
        if login:
            command += ["--login", "--pin", self.user_pin]
        return subprocess.run(
            [*command, *args],
            env=self.environ,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def import_key(self, key: rsa.RSAPrivateKey, label: str, key_id: str) -> None:
        """Import `key` (private and public object, both labelled `label`), then delete the PEM.

        softhsm2-util reads PKCS#8 PEM; GitHub's PKCS#1 download converts with
        `openssl pkcs8 -topk8 -nocrypt`. The key is stored sensitive and not extractable.
        """
        pem = self.directory / f"{label}.pem"
        descriptor = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
        self.imported_pems.append(pem)
        try:
            self.util(
                "--import", str(pem), "--token", self.token_label,
                "--label", label, "--id", key_id, "--pin", self.user_pin,
            )  # fmt: skip
        finally:
            pem.unlink()

    def write_objects(
        self,
        label: str,
        key_id: str,
        private: rsa.RSAPrivateKey,
        public: rsa.RSAPublicKey | None = None,
    ) -> None:
        """Write key objects with `pkcs11-tool --write-object` (PKCS#8 / SPKI DER files,
        deleted afterwards): `private`, sensitive, and `public` when given, both `label`."""
        objects = [
            (
                "privkey",
                private.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
                ["--sensitive"],
            )
        ]
        if public is not None:
            spki = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            objects.append(("pubkey", spki, []))
        for kind, der, flags in objects:
            path = self.directory / f"{label}-{kind}.der"
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(der)
            self.imported_pems.append(path)
            try:
                done = self.tool(
                    "--write-object", str(path), "--type", kind, "--label", label,
                    "--id", key_id, "--usage-sign", *flags,
                )  # fmt: skip
            finally:
                path.unlink()
            if done.returncode != 0:
                raise RuntimeError(f"pkcs11-tool --write-object failed: {done.stderr.strip()}")


@contextmanager
def softhsm(directory: Path, token_label: str = "exchanger-test") -> Iterator[SoftHsm]:
    """A SoftHSM2 token, with `SOFTHSM2_CONF` set in this process while the block runs."""
    hsm = SoftHsm.create(directory, token_label)
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(hsm.conf)
    try:
        yield hsm
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous
