//! One row per instance, rewritten by the health check: proof that the
//! database still commits a real write.

use sea_orm::entity::prelude::*;

#[sea_orm::model]
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "health_probes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub instance_id: String,
    /// When this instance last committed its probe.
    pub checked_at: DateTimeUtc,
}

impl ActiveModelBehavior for ActiveModel {}
