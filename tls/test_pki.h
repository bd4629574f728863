#pragma once

// Test certificates, made once per test process with the `openssl` command line program (a
// separate program: no OpenSSL library is loaded into the test) in a private temp directory:
//   ca.crt                     ECDSA P-256 test CA
//   default_ecdsa (CN default-ecdsa, SAN localhost, 127.0.0.1; chain file = leaf + CA)
//   default_rsa   (CN default-rsa,   SAN localhost, 127.0.0.1) RSA-2048
//   mail_ecdsa / mail_rsa (CN mail-ecdsa / mail-rsa, SAN mail.example.com)
//   wild_ecdsa    (CN wild-ecdsa, SAN *.example.org)
//   ed25519       (CN ed25519, SAN localhost): a key type the server refuses

#include <string>

#include "base/temp_dir.h"
#include "tls/context.h"

namespace sluice::tls::testing {

struct TestPki {
  std::string dir;
  std::string ca_file;
  ServerCertificate default_ecdsa, default_rsa, mail_ecdsa, mail_rsa, wild_ecdsa, ed25519;

  // Generates on first use; aborts the test program when `openssl` fails.
  static const TestPki& Get();
};

// Runs a shell command, returns its exit status (-1 when it could not run).
int RunShell(const std::string& command);

}  // namespace sluice::tls::testing
