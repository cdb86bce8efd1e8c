// libcrypto.so for civetweb (see libssl_shim.cc): an object whose SONAME is "libcrypto.so" and
// that only links libcrypto.so.3, so civetweb's dlopen("libcrypto.so") finds OpenSSL 3's libcrypto
// on machines without the unversioned development link (the runtime image).
