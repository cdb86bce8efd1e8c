// libssl.so for civetweb: built as a shared object whose SONAME is "libssl.so" and embedded in
// the server (server/tls_shims.h). Debian 12's civetweb 1.15 loads OpenSSL at run time with
// dlopen("libssl.so") and dlsym, and needs SSL_get_peer_certificate, which OpenSSL 3 renamed
// SSL_get1_peer_certificate (the old name is only a macro in its headers), so civetweb's HTTPS
// cannot start against OpenSSL 3. Loaded first, this object is what dlopen("libssl.so") returns:
// dlsym finds the old name here and every other function in libssl.so.3, which it links.
extern "C" {

void* SSL_get1_peer_certificate(const void* ssl);

void* SSL_get_peer_certificate(const void* ssl) { return SSL_get1_peer_certificate(ssl); }

}  // extern "C"
