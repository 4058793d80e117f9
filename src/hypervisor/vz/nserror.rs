//! `NSError` → [`NsErrorParts`], the plain data [`crate::hypervisor::vz_plan::classify`] reads.

use objc2_foundation::NSError;

use crate::hypervisor::vz_plan::NsErrorParts;

pub(super) fn parts(e: &NSError) -> NsErrorParts {
    NsErrorParts {
        domain: e.domain().to_string(),
        code: e.code(),
        description: e.localizedDescription().to_string(),
        failure_reason: e.localizedFailureReason().map(|r| r.to_string()),
    }
}
