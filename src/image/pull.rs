//! Downloads a built guest image (filled in by the image-pull work).
