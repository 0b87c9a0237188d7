"""An account's key authorizations come from its thumbprint computed once, and are the acme
library's own (the CA compares them byte for byte with what the challenge URL serves)."""

from __future__ import annotations

import os

import pytest
from acme import challenges, messages
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwa import ES256, RS256
from josepy.jwk import JWK, JWKEC, JWKRSA

from vhost_operator.acme.orders import Account

KEYS = {
    "ec": (JWKEC(key=ec.generate_private_key(ec.SECP256R1())), ES256),
    "rsa": (JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), RS256),
}


def _account(kind: str) -> Account:
    jwk, alg = KEYS[kind]
    return Account(jwk, alg, "https://ca.test/acct/1", messages.Directory({}))


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_key_authorization_and_response_are_the_librarys(kind: str) -> None:
    account = _account(kind)
    for _ in range(3):
        http01 = challenges.HTTP01(token=os.urandom(32))
        key_authorization = account.key_authorization(http01)
        assert key_authorization == http01.validation(account.jwk)
        ours = challenges.HTTP01Response(key_authorization=key_authorization)
        assert ours == http01.response(account.jwk)
        assert ours.to_partial_json() == http01.response(account.jwk).to_partial_json()


def test_the_key_is_hashed_once_per_account(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serializing and hashing the key per challenge was ~2 % of an issuing client's CPU."""
    account = _account("ec")
    hashed: list[JWK] = []
    thumbprint = JWK.thumbprint

    def counted(self: JWK, *args: object, **kwargs: object) -> bytes:
        hashed.append(self)
        return thumbprint(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(JWK, "thumbprint", counted)
    for _ in range(3):
        account.key_authorization(challenges.HTTP01(token=os.urandom(32)))
    assert hashed == []
