//! Reports: per-mode results side by side as a text table and as JSON.
