use serde::{Deserialize, Serialize};

/// Where a device's MQTT connection stands; with `enable` it gives the API's `status`
/// (0 disabled, 1 inactive, 2 offline, 3 online).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnState {
    /// Never connected.
    Inactive,
    Offline,
    Online,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: u64,
    pub product_id: u64,
    /// Unique.
    pub name: String,
    /// MQTT user name; unique.
    pub username: String,
    /// MQTT client id; unique.
    pub mqtt_client_id: String,
    /// Returned by the device detail endpoint, so it is kept as given.
    pub password: String,
    pub nickname: String,
    pub device_type: Option<String>,
    pub description: Option<String>,
    pub enable: bool,
    pub conn: ConnState,
    pub ip: Option<String>,
    pub connected_at: Option<i64>,
    pub disconnected_at: Option<i64>,
    /// Dynamic registration hands out credentials once; set when it has.
    pub credentials_issued: bool,
    pub created_at: i64,
}

impl Device {
    /// The API's status code.
    pub fn status(&self) -> u8 {
        match (self.enable, self.conn) {
            (false, _) => 0,
            (true, ConnState::Inactive) => 1,
            (true, ConnState::Offline) => 2,
            (true, ConnState::Online) => 3,
        }
    }
}

/// A partial update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicePatch {
    pub name: Option<String>,
    pub product_id: Option<u64>,
    pub username: Option<String>,
    pub mqtt_client_id: Option<String>,
    pub password: Option<String>,
    pub nickname: Option<String>,
    pub device_type: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub enable: Option<bool>,
}
