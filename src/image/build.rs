//! Assembles a guest image from Debian packages (filled in by the image-build work).
