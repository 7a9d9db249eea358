//! Runnable examples of tilpass; see the `[[example]]` entries of this package.
