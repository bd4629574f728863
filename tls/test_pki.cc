#include "tls/test_pki.h"

#include <cstdlib>
#include <memory>

#include <sys/wait.h>

#include "base/log.h"

namespace sluice::tls::testing {

namespace {

constexpr char kEcP256[] = "-algorithm EC -pkeyopt ec_paramgen_curve:P-256";
constexpr char kRsa2048[] = "-algorithm RSA -pkeyopt rsa_keygen_bits:2048";

void Run(const std::string& dir, const std::string& command) {
  std::string full = "cd '" + dir + "' && { " + command + " ; } >openssl.log 2>&1";
  if (RunShell(full) != 0) {
    std::string log = "cat '" + dir + "/openssl.log' >&2";
    (void)RunShell(log);
    SLUICE_BUG(("test PKI: command failed: " + command).c_str());
  }
}

ServerCertificate Leaf(const std::string& dir, const std::string& name, const char* keygen,
                       const std::string& san, bool chain) {
  std::string cn = name;
  for (char& c : cn) {
    c = c == '_' ? '-' : c;
  }
  Run(dir, "openssl genpkey -quiet " + std::string(keygen) + " -out " + name + ".key");
  Run(dir, "openssl req -new -key " + name + ".key -subj /CN=" + cn + " -out " + name + ".csr");
  Run(dir, "printf 'subjectAltName=" + san +
               "\\nbasicConstraints=critical,CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > " + name +
               ".ext");
  Run(dir, "openssl x509 -req -in " + name + ".csr -CA ca.crt -CAkey ca.key -CAcreateserial" +
               " -days 30 -extfile " + name + ".ext -out " + name + ".crt");
  std::string cert = dir + "/" + name + ".crt";
  if (chain) {
    Run(dir, "cat " + name + ".crt ca.crt > " + name + ".chain.crt");
    cert = dir + "/" + name + ".chain.crt";
  }
  return ServerCertificate{cert, dir + "/" + name + ".key"};
}

}  // namespace

int RunShell(const std::string& command) {
  int status = std::system(command.c_str());
  if (status == -1 || !WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status);
}

const TestPki& TestPki::Get() {
  static TempDir temp("sluice-tls-pki");  // removed at exit
  static const TestPki* pki = [] {
    auto* p = new TestPki;
    p->dir = temp.path();
    Run(p->dir, "openssl genpkey -quiet " + std::string(kEcP256) +
                    " -out ca.key && openssl req -x509 -new -key ca.key -out ca.crt -days 30"
                    " -subj '/CN=Sluice Test CA'"
                    " -addext basicConstraints=critical,CA:TRUE"
                    " -addext keyUsage=critical,keyCertSign,cRLSign");
    p->ca_file = p->dir + "/ca.crt";
    const std::string local = "DNS:localhost,IP:127.0.0.1";
    p->default_ecdsa = Leaf(p->dir, "default_ecdsa", kEcP256, local, /*chain=*/true);
    p->default_rsa = Leaf(p->dir, "default_rsa", kRsa2048, local, false);
    p->mail_ecdsa = Leaf(p->dir, "mail_ecdsa", kEcP256, "DNS:mail.example.com", false);
    p->mail_rsa = Leaf(p->dir, "mail_rsa", kRsa2048, "DNS:mail.example.com", false);
    p->wild_ecdsa = Leaf(p->dir, "wild_ecdsa", kEcP256, "DNS:*.example.org", false);
    p->ed25519 = Leaf(p->dir, "ed25519", "-algorithm ED25519", "DNS:localhost", false);
    return p;
  }();
  return *pki;
}

}  // namespace sluice::tls::testing
