"""SNI picks the listener's certificate for that name; SIGHUP swaps in new
certificates for new connections."""

import re
import shutil
import signal
import subprocess
import unittest

import harness
from harness import DaemonTestCase


def server_key_bits(port, servername=None):
    """Bits of the server's public key as openssl s_client reports them.

    -ign_eof with QUIT as input: s_client sends QUIT once the handshake is
    done and waits for the server to close. With an empty stdin it may see
    EOF and quit before a slow handshake (ASan, a loaded machine) completes,
    printing no certificate at all."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-crlf",
                        "-ign_eof"] + (["-servername", servername] if servername else []),
                       input="QUIT\n", capture_output=True, text=True, timeout=30)
    m = re.search(r"Server public key is (\d+) bit", r.stdout)
    if not m:
        raise AssertionError(f"s_client to {port} ({servername}): no certificate in\n"
                             f"{r.stdout[-2000:]}\n{r.stderr[-1000:]}")
    return int(m.group(1))


class SniTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.certs = harness.make_dev_certs(self.workdir / "certs")
        self.other = harness.make_dev_certs(self.workdir / "other")

    def listeners(self):
        # A plaintext listener first: the harness waits for its 220 greeting.
        return [{"name": "plain"}, {
            "name": "tls",
            "tls": "implicit",
            "certificate": str(self.certs / "ecdsa.crt"),
            "private_key": str(self.certs / "ecdsa.key"),
        }]

    def test_sni_selects_the_named_certificate(self):
        d = self.daemon(listeners=self.listeners(), start=False)
        with open(d.config_path, "a") as f:
            f.write("\n[[listener.sni]]\nname = \"mail.example.test\"\n"
                    f"certificate = \"{self.other / 'rsa.crt'}\"\n"
                    f"private_key = \"{self.other / 'rsa.key'}\"\n")
        d.start()
        self.assertEqual(server_key_bits(d.port_of("tls")), 256)  # default: ECDSA P-256
        self.assertEqual(server_key_bits(d.port_of("tls"), "mail.example.test"), 2048)  # the SNI entry: RSA
        self.assertEqual(server_key_bits(d.port_of("tls"), "other.example.test"), 256)

    def test_sighup_reloads_certificates(self):
        d = self.daemon(listeners=self.listeners())
        self.assertEqual(server_key_bits(d.port_of("tls")), 256)
        # Swap the files behind the same paths for an RSA pair, then SIGHUP.
        shutil.copy(self.other / "rsa.crt", self.certs / "ecdsa.crt")
        shutil.copy(self.other / "rsa.key", self.certs / "ecdsa.key")
        d.signal(signal.SIGHUP)
        # New connections get the RSA key once sluiced has taken the signal.
        harness.wait_until(lambda: server_key_bits(d.port_of("tls")) == 2048, 10,
                           "a 2048-bit key on a new connection after SIGHUP", interval=0.1)
        self.assertTrue(d.running(), "sluiced died on SIGHUP")
        self.assertEqual(server_key_bits(d.port_of("tls")), 2048)


if __name__ == "__main__":
    unittest.main()
