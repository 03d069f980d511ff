//! API tokens: who may mint them, and the rules for their names.

use super::{Service, ServiceError, ServiceResult};
use crate::auth::{Principal, Role};
use crate::domain::DisplayName;
use crate::store::TokenRecord;

impl Service {
    /// Mints a member token; only an admin may. Returns the token (shown this once) and its record.
    #[tracing::instrument(skip_all, fields(name = %name))]
    pub async fn create_token(
        &self,
        caller: &Principal,
        name: &str,
    ) -> ServiceResult<(String, TokenRecord)> {
        if caller.role != Role::Admin {
            return Err(ServiceError::Forbidden(
                "only an admin token can create tokens".into(),
            ));
        }
        let name = DisplayName::parse("name", name)?;
        Ok(crate::auth::mint(&self.store, name.as_str(), Role::Member).await?)
    }
}
