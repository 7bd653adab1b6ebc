//! The order in which the server picks TLS 1.3 suites, by this CPU: AES-GCM
//! first only where AES runs in hardware. Without it (Raspberry Pi 4 and
//! older, armv6/armv7) ChaCha20-Poly1305 is about 3× faster. AES-128 comes
//! last either way: its sessions stay with rustls for life (`record`).

use rustls::crypto::ring::cipher_suite as suite;
use rustls::SupportedCipherSuite;
use std::sync::OnceLock;

/// The AES and carry-less multiply instructions this CPU has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuFeatures {
    pub aarch64_aes: bool,
    pub x86_aes: bool,
    pub x86_pclmulqdq: bool,
}

impl CpuFeatures {
    fn detect() -> CpuFeatures {
        #[allow(unused_mut)]
        let mut features = CpuFeatures {
            aarch64_aes: false,
            x86_aes: false,
            x86_pclmulqdq: false,
        };
        #[cfg(target_arch = "aarch64")]
        {
            features.aarch64_aes = std::arch::is_aarch64_feature_detected!("aes");
        }
        #[cfg(target_arch = "x86_64")]
        {
            features.x86_aes = std::arch::is_x86_feature_detected!("aes");
            features.x86_pclmulqdq = std::arch::is_x86_feature_detected!("pclmulqdq");
        }
        features
    }
}

/// The TLS 1.3 suites in the server's order for a CPU with `features`.
pub fn tls13_order(features: CpuFeatures) -> [SupportedCipherSuite; 3] {
    let aes_in_hardware = features.aarch64_aes || (features.x86_aes && features.x86_pclmulqdq);
    if aes_in_hardware {
        [
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS13_AES_128_GCM_SHA256,
        ]
    } else {
        [
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_AES_128_GCM_SHA256,
        ]
    }
}

/// This CPU's order, chosen (and logged) once.
pub fn tls13_order_here() -> [SupportedCipherSuite; 3] {
    static ORDER: OnceLock<[SupportedCipherSuite; 3]> = OnceLock::new();
    *ORDER.get_or_init(|| {
        let order = tls13_order(CpuFeatures::detect());
        let names: Vec<String> = order.iter().map(|s| format!("{:?}", s.suite())).collect();
        log::info!("tls: TLS 1.3 suites in the order {}", names.join(", "));
        order
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(aarch64_aes: bool, x86_aes: bool, x86_pclmulqdq: bool) -> SupportedCipherSuite {
        tls13_order(CpuFeatures {
            aarch64_aes,
            x86_aes,
            x86_pclmulqdq,
        })[0]
    }

    #[test]
    fn aes_first_only_where_it_runs_in_hardware() {
        assert_eq!(first(true, false, false), suite::TLS13_AES_256_GCM_SHA384);
        assert_eq!(first(false, true, true), suite::TLS13_AES_256_GCM_SHA384);
        // A Pi 4 or older, and x86 without both instructions.
        assert_eq!(
            first(false, false, false),
            suite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(
            first(false, true, false),
            suite::TLS13_CHACHA20_POLY1305_SHA256
        );
        assert_eq!(
            first(false, false, true),
            suite::TLS13_CHACHA20_POLY1305_SHA256
        );
        for features in [(true, false, false), (false, false, false)] {
            let order = tls13_order(CpuFeatures {
                aarch64_aes: features.0,
                x86_aes: features.1,
                x86_pclmulqdq: features.2,
            });
            assert_eq!(order[2], suite::TLS13_AES_128_GCM_SHA256);
        }
    }
}
