"""C2PA files the tests write themselves: a throwaway CA and signer made with
``cryptography`` (ES256), manifests signed by the real SDK (``c2pa-python``).

Nothing here is a trusted credential: the CA lives for one test session. Signed files read
as ``Valid`` (signature and hashes check out, signer unknown) and as ``Trusted`` only with
that CA given as an anchor (``ca_pem``)."""

from __future__ import annotations

import datetime as dt
import functools
import io
import json

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"


@functools.lru_cache(maxsize=1)
def credentials() -> tuple[bytes, bytes, bytes]:
    """(certificate chain PEM, private key PEM, CA certificate PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Toy Test Org")]
        )

    def usage(**on):
        keys = (
            "digital_signature",
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
            "encipher_only",
            "decipher_only",
        )
        return x509.KeyUsage(**{k: on.get(k, False) for k in keys})

    now = dt.datetime.now(dt.timezone.utc)
    ca_key, ee_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("Toy Root CA"))
        .issuer_name(name("Toy Root CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ee = (
        x509.CertificateBuilder()
        .subject_name(name("Toy Generator Signer"))
        .issuer_name(ca.subject)
        .public_key(ee_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ee_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    chain = ee.public_bytes(pem) + ca.public_bytes(pem)
    key = ee_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return chain, key, ca.public_bytes(pem)


def ca_pem() -> bytes:
    return credentials()[2]


def sign(
    image: bytes, mime: str, *, source_type: str | None = "trainedAlgorithmicMedia", generator: str = "ToyGen"
) -> bytes:
    """``image`` with an embedded, signed C2PA manifest: one ``c2pa.created`` action whose
    ``digitalSourceType`` is ``source_type`` (IPTC URL form)."""
    import c2pa

    chain, key, _ca = credentials()
    action = {"action": "c2pa.created", "softwareAgent": {"name": generator}}
    if source_type:
        action["digitalSourceType"] = IPTC + source_type
    manifest = {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "toy",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [action]}}],
    }
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain, private_key=key, ta_url=None))
    out = io.BytesIO()
    with signer, c2pa.Builder(json.dumps(manifest)) as builder:
        builder.sign(signer, mime, io.BytesIO(image), out)
    return out.getvalue()


def xmp_packet(source_type: str, *, attribute: bool = False) -> bytes:
    """An XMP packet stating an IPTC digital source type (element or attribute form)."""
    value = IPTC + source_type
    prop = (
        f' Iptc4xmpExt:DigitalSourceType="{value}">'
        if attribute
        else f"><Iptc4xmpExt:DigitalSourceType>{value}</Iptc4xmpExt:DigitalSourceType>"
    )
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
        'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"'
        f'{prop}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()
