// Server credentials from the TLS flags: plaintext, TLS (--tls_cert + --tls_key) or mutual TLS
// (plus --tls_client_ca: every client must present a certificate signed by that CA). Uses gRPC's own
// SslServerCredentials, so the handshake, protocol versions and ciphers are gRPC's defaults.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"

namespace squeezeserve::server {

struct TlsFiles {
  std::string cert;       // PEM certificate chain of the server
  std::string key;        // PEM private key of the server
  std::string client_ca;  // PEM CA bundle for client certificates; empty = no client certificates
};

// INVALID_ARGUMENT for inconsistent flags (key without cert, client CA without TLS), NOT_FOUND for an
// unreadable file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const TlsFiles& files);

}  // namespace squeezeserve::server
