use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    /// Unique.
    pub name: String,
    /// Unique, 10 hex characters.
    pub product_key: String,
    /// 16 hex characters; signs dynamic registrations.
    pub secret: String,
    /// 1 directly connected devices, 2 gateways.
    pub product_type: u8,
    /// 1 allows dynamic registration, 0 does not.
    pub dynamic_reg: u8,
    /// 1 secret-key authentication (2, certificates, is not supported).
    pub auth_type: u8,
    pub status: u8,
    pub description: Option<String>,
    pub created_at: i64,
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductPatch {
    pub name: Option<String>,
    pub product_type: Option<u8>,
    pub dynamic_reg: Option<u8>,
    pub auth_type: Option<u8>,
    pub description: Option<Option<String>>,
}
