//! Users and their keys, as the monitors hold them: the secret for a request's access key
//! (for s3s to check the signature) and the user name that owns buckets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};
use tidepool_client::MonClient;
use tidepool_proto::mon::User;
use tokio::sync::Mutex;

/// The least time between two fetches of the user list caused by unknown keys.
const REFRESH_INTERVAL_MIN: Duration = Duration::from_secs(1);

/// Users by access key, fetched from the monitors when a key is not known yet.
#[derive(Debug)]
pub struct Users {
    mon: Mutex<MonClient>,
    state: std::sync::Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    by_key: HashMap<String, User>,
    fetched: Option<Instant>,
}

impl Users {
    /// Users fetched through `mon` (whose certificate may read keys).
    pub fn new(mon: MonClient) -> Users {
        Users {
            mon: Mutex::new(mon),
            state: std::sync::Mutex::new(State::default()),
        }
    }

    /// The user with access key `access_key`, fetching the list again when the key is
    /// unknown (at most once per second, so unknown keys cannot flood the monitors).
    pub async fn by_access_key(&self, access_key: &str) -> Option<User> {
        {
            let state = self.state.lock().expect("users");
            if let Some(user) = state.by_key.get(access_key) {
                return Some(user.clone());
            }
            if state
                .fetched
                .is_some_and(|at| at.elapsed() < REFRESH_INTERVAL_MIN)
            {
                return None;
            }
        }
        let mut mon = self.mon.lock().await;
        let fetched = mon.users().await;
        let mut state = self.state.lock().expect("users");
        state.fetched = Some(Instant::now());
        match fetched {
            Ok(users) => {
                state.by_key = users
                    .into_iter()
                    .map(|u| (u.access_key.clone(), u))
                    .collect();
            }
            Err(error) => tracing::warn!(%error, "fetching users from the monitors failed"),
        }
        state.by_key.get(access_key).cloned()
    }
}

impl Users {
    /// Whether a user named `name` exists (fetching the list again, at most once per second,
    /// when it is not known).
    pub async fn exists(&self, name: &str) -> bool {
        let known = |state: &State| state.by_key.values().any(|u| u.name == name);
        if known(&self.state.lock().expect("users")) {
            return true;
        }
        // An unknown key refreshes the list (rate-limited) as a side effect.
        let _ = self.by_access_key("").await;
        known(&self.state.lock().expect("users"))
    }
}

/// The users as s3s's source of secret keys.
#[derive(Debug)]
pub struct UserKeys(pub std::sync::Arc<Users>);

#[async_trait::async_trait]
impl S3Auth for UserKeys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.by_access_key(access_key).await {
            Some(user) => Ok(SecretKey::from(user.secret_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}
