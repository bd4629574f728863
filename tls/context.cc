#include "tls/context.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "base/ascii.h"
#include "tls/detail/contexts.h"
#include "tls/detail/errors.h"

namespace sluice::tls {

namespace {

// TLS 1.2 suites: forward secret AEADs only (ECDHE with AES-GCM or ChaCha20-Poly1305). TLS 1.3
// suites are fixed in BoringSSL (there is no SSL_CTX_set_ciphersuites) and all strong.
constexpr char kServerCipherList[] = "ECDHE+AESGCM:ECDHE+CHACHA20";

// ECDHE-ECDSA suites of kServerCipherList, by code point (RFC 5289, RFC 7905).
constexpr uint16_t kEcdsaSuites[] = {0xC02B, 0xC02C, 0xCCA9};

std::string FileError(std::string_view what, const std::string& path) {
  std::string message(what);
  message += " ";
  message += path;
  return message;
}

// Checks up front that a file can be opened, so a typo in the config gets "No such file or
// directory" with the path instead of a PEM parser error.
Result<void> CheckReadable(std::string_view what, const std::string& path) {
  if (path.empty()) {
    return MakeError(std::string(what) + " path is empty");
  }
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    return MakeError(FileError(std::string("cannot read ") + std::string(what), path) + ": " +
                         std::strerror(err),
                     err);
  }
  ::close(fd);
  return {};
}

Result<int> CheckVersion(int version, std::string_view which) {
  if (version != kTls12 && version != kTls13) {
    return MakeError(std::string(which) + " must be TLS 1.2 (0x0303) or TLS 1.3 (0x0304), got " +
                     std::to_string(version));
  }
  return version;
}

// The TLS 1.3 signature scheme for an ECDSA key on `nid`, 0 for curves TLS does not sign with.
uint16_t EcdsaSchemeForCurve(int nid) {
  switch (nid) {
    case NID_X9_62_prime256v1:
      return SSL_SIGN_ECDSA_SECP256R1_SHA256;
    case NID_secp384r1:
      return SSL_SIGN_ECDSA_SECP384R1_SHA384;
    case NID_secp521r1:
      return SSL_SIGN_ECDSA_SECP521R1_SHA512;
    default:
      return 0;
  }
}

ssl_select_cert_result_t SelectCertificate(const SSL_CLIENT_HELLO* hello) {
  SSL* ssl = hello->ssl;
  const auto* impl =
      static_cast<const ServerContext::Impl*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), 0));
  if (impl == nullptr) {
    return ssl_select_cert_error;  // not one of ours; cannot happen
  }
  // RFC 6066 §3: the name from the ClientHello's server_name extension, parsed by BoringSSL.
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  const detail::CertificateSet& set = impl->Select(name != nullptr ? name : "");
  SSL_CTX* chosen = set.preferred();
  if (set.ecdsa != nullptr && set.rsa != nullptr &&
      !detail::ClientAcceptsEcdsa(hello, set.ecdsa_scheme)) {
    chosen = set.rsa.get();
  }
  if (chosen != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, chosen) == nullptr) {
    return ssl_select_cert_error;
  }
  return ssl_select_cert_success;
}

struct LoadedKey {
  bool ecdsa = false;
  uint16_t ecdsa_scheme = 0;
};

// One SSL_CTX with the server policy and one certificate. The session ID context partitions
// session resumption by certificate set (name), so a session made for one name is not resumed
// under another's certificate.
Result<bssl::UniquePtr<SSL_CTX>> NewServerCtx(const ServerOptions& options,
                                              const std::string& sid_context,
                                              const ServerContext::Impl* impl) {
  bssl::UniquePtr<SSL_CTX> ctx(SSL_CTX_new(TLS_method()));
  if (ctx == nullptr) {
    return MakeError("SSL_CTX_new failed: " + detail::DrainErrors());
  }
  if (!SSL_CTX_set_min_proto_version(ctx.get(), static_cast<uint16_t>(options.min_version)) ||
      !SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION)) {
    return MakeError("cannot set TLS versions: " + detail::DrainErrors());
  }
  if (!SSL_CTX_set_strict_cipher_list(ctx.get(), kServerCipherList)) {
    return MakeError("cannot set cipher list: " + detail::DrainErrors());
  }
  // Renegotiation is off by default in BoringSSL (SSL_OP_NO_RENEGOTIATION is 0 there).
  uint32_t ops = SSL_OP_CIPHER_SERVER_PREFERENCE;
  if (!options.session_tickets) {
    ops |= SSL_OP_NO_TICKET;
  }
  SSL_CTX_set_options(ctx.get(), ops);
  if (!SSL_CTX_set_session_id_context(
          ctx.get(), reinterpret_cast<const uint8_t*>(sid_context.data()),
          std::min<size_t>(sid_context.size(), SSL_MAX_SID_CTX_LENGTH))) {
    return MakeError("cannot set session id context: " + detail::DrainErrors());
  }
  SSL_CTX_set_select_certificate_cb(ctx.get(), SelectCertificate);
  // Ex-data slot 0 is BoringSSL's app_data slot.
  SSL_CTX_set_ex_data(ctx.get(), 0, const_cast<ServerContext::Impl*>(impl));
  return ctx;
}

Result<LoadedKey> LoadCertificate(SSL_CTX* ctx, const ServerCertificate& cert) {
  if (auto r = CheckReadable("certificate file", cert.cert_chain_file); !r) {
    return r.error();
  }
  if (auto r = CheckReadable("private key file", cert.private_key_file); !r) {
    return r.error();
  }
  ERR_clear_error();
  if (!SSL_CTX_use_certificate_chain_file(ctx, cert.cert_chain_file.c_str())) {
    return MakeError(FileError("no usable PEM certificate chain in", cert.cert_chain_file) + ": " +
                     detail::DrainErrors());
  }
  bssl::UniquePtr<BIO> bio(BIO_new_file(cert.private_key_file.c_str(), "r"));
  bssl::UniquePtr<EVP_PKEY> key;
  if (bio != nullptr) {
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  }
  if (key == nullptr) {
    return MakeError(
        FileError("no usable PEM private key (unencrypted) in", cert.private_key_file) + ": " +
        detail::DrainErrors());
  }
  LoadedKey loaded;
  switch (EVP_PKEY_id(key.get())) {
    case EVP_PKEY_EC: {
      const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(key.get());
      int nid = ec != nullptr ? EC_GROUP_get_curve_name(EC_KEY_get0_group(ec)) : NID_undef;
      loaded.ecdsa = true;
      loaded.ecdsa_scheme = EcdsaSchemeForCurve(nid);
      if (loaded.ecdsa_scheme == 0) {
        return MakeError(FileError("unsupported ECDSA curve (use P-256, P-384 or P-521) in",
                                   cert.private_key_file));
      }
      break;
    }
    case EVP_PKEY_RSA:
      if (EVP_PKEY_bits(key.get()) < 2048) {
        return MakeError(FileError("RSA key shorter than 2048 bits in", cert.private_key_file));
      }
      break;
    default:
      return MakeError(
          FileError("unsupported private key type (use ECDSA or RSA) in", cert.private_key_file));
  }
  ERR_clear_error();
  if (!SSL_CTX_use_PrivateKey(ctx, key.get()) || !SSL_CTX_check_private_key(ctx)) {
    return MakeError("private key " + cert.private_key_file + " does not match certificate " +
                     cert.cert_chain_file + ": " + detail::DrainErrors());
  }
  return loaded;
}

// Builds the one or two contexts for a set of certificates of one name.
Result<detail::CertificateSet> LoadSet(const ServerOptions& options,
                                       const std::vector<ServerCertificate>& certs,
                                       const std::string& label, const ServerContext::Impl* impl) {
  if (certs.empty()) {
    return MakeError(label + ": no certificate configured");
  }
  if (certs.size() > 2) {
    return MakeError(label + ": at most two certificates (one ECDSA, one RSA)");
  }
  detail::CertificateSet set;
  for (const ServerCertificate& cert : certs) {
    auto ctx = NewServerCtx(options, "sluice/" + label, impl);
    if (!ctx) {
      return ctx.error();
    }
    auto key = LoadCertificate(ctx->get(), cert);
    if (!key) {
      return MakeError(label + ": " + key.error().message, key.error().code);
    }
    bssl::UniquePtr<SSL_CTX>& slot = key->ecdsa ? set.ecdsa : set.rsa;
    if (slot != nullptr) {
      return MakeError(label + ": two " + (key->ecdsa ? "ECDSA" : "RSA") +
                       " certificates; configure at most one of each type");
    }
    slot = std::move(*ctx);
    if (key->ecdsa) {
      set.ecdsa_scheme = key->ecdsa_scheme;
    }
  }
  return set;
}

}  // namespace

namespace detail {

std::string NormalizeHostName(std::string_view name) {
  if (!name.empty() && name.back() == '.') {
    name.remove_suffix(1);
  }
  return AsciiToLower(name);
}

bool IsIpLiteral(std::string_view name) {
  std::string s(name);
  in6_addr addr6{};
  in_addr addr4{};
  return inet_pton(AF_INET, s.c_str(), &addr4) == 1 || inet_pton(AF_INET6, s.c_str(), &addr6) == 1;
}

bool IsDnsName(std::string_view name) {
  return !name.empty() && !IsIpLiteral(name);
}

namespace {
uint16_t ReadU16(const uint8_t* p) {
  return static_cast<uint16_t>((p[0] << 8) | p[1]);
}
}  // namespace

bool SignatureAlgorithmsContain(const uint8_t* data, size_t len, uint16_t scheme) {
  if (len < 2) {
    return false;
  }
  size_t list_len = ReadU16(data);
  if (list_len + 2 > len || list_len % 2 != 0) {
    return false;
  }
  for (size_t i = 2; i + 1 < list_len + 2; i += 2) {
    if (ReadU16(data + i) == scheme) {
      return true;
    }
  }
  return false;
}

bool SupportedVersionsContain(const uint8_t* data, size_t len, uint16_t version) {
  if (len < 1) {
    return false;
  }
  size_t list_len = data[0];
  if (list_len + 1 > len || list_len % 2 != 0) {
    return false;
  }
  for (size_t i = 1; i + 1 < list_len + 1; i += 2) {
    if (ReadU16(data + i) == version) {
      return true;
    }
  }
  return false;
}

bool CipherSuitesContainAny(const uint8_t* data, size_t len, const uint16_t* suites, size_t n) {
  for (size_t i = 0; i + 1 < len; i += 2) {
    uint16_t suite = ReadU16(data + i);
    if (std::find(suites, suites + n, suite) != suites + n) {
      return true;
    }
  }
  return false;
}

bool ClientAcceptsEcdsa(const SSL_CLIENT_HELLO* hello, uint16_t ecdsa_scheme) {
  const uint8_t* data = nullptr;
  size_t len = 0;
  bool tls13 =
      SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_supported_versions, &data, &len) &&
      SupportedVersionsContain(data, len, TLS1_3_VERSION);
  bool ecdsa_suite = CipherSuitesContainAny(hello->cipher_suites, hello->cipher_suites_len,
                                            kEcdsaSuites, std::size(kEcdsaSuites));
  if (!tls13 && !ecdsa_suite) {
    return false;
  }
  if (!SSL_early_callback_ctx_extension_get(hello, TLSEXT_TYPE_signature_algorithms, &data, &len)) {
    // No signature_algorithms: TLS 1.2 then implies {sha1, ecdsa} for ECDSA suites
    // (RFC 5246 §7.4.1.4.1); TLS 1.3 requires the extension.
    return !tls13 && ecdsa_suite;
  }
  return SignatureAlgorithmsContain(data, len, ecdsa_scheme);
}

}  // namespace detail

const detail::CertificateSet& ServerContext::Impl::Select(std::string_view server_name) const {
  if (server_name.empty() || (exact.empty() && wildcard.empty())) {
    return default_set;
  }
  std::string name = detail::NormalizeHostName(server_name);
  if (auto it = exact.find(name); it != exact.end()) {
    return it->second;
  }
  // "*.example.com" covers exactly one label to the left (RFC 6125 §6.4.3).
  if (size_t dot = name.find('.'); dot != std::string::npos && dot > 0) {
    if (auto it = wildcard.find(name.substr(dot + 1)); it != wildcard.end()) {
      return it->second;
    }
  }
  return default_set;
}

ServerContext::ServerContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
}
ServerContext::~ServerContext() = default;

Result<std::shared_ptr<ServerContext>> ServerContext::Create(const ServerOptions& options) {
  if (auto v = CheckVersion(options.min_version, "min_version"); !v) {
    return v.error();
  }
  auto impl = std::make_unique<Impl>();
  auto set = LoadSet(options, options.certificates, "default certificates", impl.get());
  if (!set) {
    return set.error();
  }
  impl->default_set = std::move(*set);
  for (const ServerOptions::SniEntry& entry : options.sni) {
    std::string name = detail::NormalizeHostName(entry.name);
    bool wild = name.size() > 2 && name[0] == '*' && name[1] == '.';
    std::string key = wild ? name.substr(2) : name;
    if (key.empty() || key.find('*') != std::string::npos || key.front() == '.' ||
        key.find("..") != std::string::npos) {
      return MakeError("sni name \"" + entry.name +
                       "\": expected a host name or \"*.\" followed by one");
    }
    auto& map = wild ? impl->wildcard : impl->exact;
    if (map.count(key) != 0) {
      return MakeError("sni name \"" + entry.name + "\" configured twice");
    }
    auto entry_set = LoadSet(options, entry.certificates, "sni \"" + name + "\"", impl.get());
    if (!entry_set) {
      return entry_set.error();
    }
    map.emplace(std::move(key), std::move(*entry_set));
  }
  return std::shared_ptr<ServerContext>(new ServerContext(std::move(impl)));
}

void ClientContext::Impl::Store(const std::string& key, bssl::UniquePtr<SSL_SESSION> session) {
  std::lock_guard lock(mu);
  if (cache_limit == 0) {
    return;
  }
  auto it = sessions.find(key);
  if (it != sessions.end()) {
    by_age.erase(it->second.seq);
  } else {
    while (sessions.size() >= cache_limit && !by_age.empty()) {
      sessions.erase(by_age.begin()->second);
      by_age.erase(by_age.begin());
    }
    it = sessions.emplace(key, Entry{}).first;
  }
  it->second.session = std::move(session);
  it->second.seq = next_seq++;
  by_age.emplace(it->second.seq, key);
}

bssl::UniquePtr<SSL_SESSION> ClientContext::Impl::Lookup(const std::string& key) {
  std::lock_guard lock(mu);
  auto it = sessions.find(key);
  if (it == sessions.end()) {
    return nullptr;
  }
  if (SSL_SESSION_should_be_single_use(it->second.session.get())) {
    bssl::UniquePtr<SSL_SESSION> session = std::move(it->second.session);
    by_age.erase(it->second.seq);
    sessions.erase(it);
    return session;
  }
  SSL_SESSION_up_ref(it->second.session.get());
  return bssl::UniquePtr<SSL_SESSION>(it->second.session.get());
}

ClientContext::ClientContext(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {
}
ClientContext::~ClientContext() = default;

size_t ClientContext::cached_sessions() const {
  std::lock_guard lock(impl_->mu);
  return impl_->sessions.size();
}

Result<std::shared_ptr<ClientContext>> ClientContext::Create(const ClientOptions& options) {
  if (auto v = CheckVersion(options.min_version, "min_version"); !v) {
    return v.error();
  }
  if (options.max_version != 0) {
    if (auto v = CheckVersion(options.max_version, "max_version"); !v) {
      return v.error();
    }
    if (options.max_version < options.min_version) {
      return MakeError("max_version is below min_version");
    }
  }
  if (auto r = CheckReadable("CA file", options.ca_file); !r) {
    return r.error();
  }
  auto impl = std::make_unique<Impl>();
  impl->cache_limit = options.session_cache_size;
  impl->ctx.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* ctx = impl->ctx.get();
  if (ctx == nullptr) {
    return MakeError("SSL_CTX_new failed: " + detail::DrainErrors());
  }
  uint16_t max =
      static_cast<uint16_t>(options.max_version != 0 ? options.max_version : TLS1_3_VERSION);
  if (!SSL_CTX_set_min_proto_version(ctx, static_cast<uint16_t>(options.min_version)) ||
      !SSL_CTX_set_max_proto_version(ctx, max)) {
    return MakeError("cannot set TLS versions: " + detail::DrainErrors());
  }
  ERR_clear_error();
  if (!SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr)) {
    return MakeError("no usable PEM certificates in CA file " + options.ca_file + ": " +
                     detail::DrainErrors());
  }
  // BoringSSL clients have no internal session cache: sessions come to new_session_cb and we
  // offer them again with SSL_set_session (docs/design.md §7).
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, detail::StoreClientSession);
  return std::shared_ptr<ClientContext>(new ClientContext(std::move(impl)));
}

}  // namespace sluice::tls
