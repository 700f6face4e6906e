# Independent check of a Web Push request with Python's `cryptography`:
# decrypts an aes128gcm body (RFC 8291 / RFC 8188) and verifies the VAPID
# JWT (RFC 8292, ES256). Arguments: UA private key, body, auth secret,
# Authorization header, expected audience (base64url where binary).
# Prints {"plaintext", "exp", "sub"} as JSON; fails loudly otherwise.
import base64
import json
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def unb64(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def hkdf(salt, info, length, ikm):
    return HKDF(hashes.SHA256(), length, salt, info).derive(ikm)


def decrypt(ua_private, body, auth):
    curve = ec.SECP256R1()
    key = ec.derive_private_key(int.from_bytes(ua_private, "big"), curve)
    ua_public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public, sealed = body[21 : 21 + idlen], body[21 + idlen :]
    assert len(sealed) <= rs, "one record"
    peer = ec.EllipticCurvePublicKey.from_encoded_point(curve, as_public)
    shared = key.exchange(ec.ECDH(), peer)
    ikm = hkdf(auth, b"WebPush: info\0" + ua_public + as_public, 32, shared)
    cek = hkdf(salt, b"Content-Encoding: aes128gcm\0", 16, ikm)
    nonce = hkdf(salt, b"Content-Encoding: nonce\0", 12, ikm)
    record = AESGCM(cek).decrypt(nonce, sealed, None).rstrip(b"\0")
    assert record[-1:] == b"\x02", "last-record delimiter"
    return record[:-1]


def verify_vapid(header, audience):
    assert header.startswith("vapid t="), header
    token, key = header[len("vapid t=") :].split(", k=")
    head, claims, sig = token.split(".")
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64(key))
    raw = unb64(sig)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, (head + "." + claims).encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64(head)) == {"typ": "JWT", "alg": "ES256"}
    claims = json.loads(unb64(claims))
    assert claims["aud"] == audience, claims
    return claims


ua_private, body, auth, header, audience = sys.argv[1:6]
plaintext = decrypt(unb64(ua_private), unb64(body), unb64(auth))
claims = verify_vapid(header, audience)
print(json.dumps({"plaintext": plaintext.decode(), "exp": claims["exp"], "sub": claims["sub"]}))
