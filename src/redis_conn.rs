//! The shared Redis connection. It connects lazily and reconnects on its own, so the
//! service starts (and reports itself not ready) while Redis is down instead of crashing.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use crate::config::Config;

#[derive(Clone)]
pub struct RedisConn {
    client: redis::Client,
    manager: ConnectionManager,
    /// Prepended to every key this process writes, so tests (and several deployments
    /// sharing one Redis) never see each other's keys.
    prefix: String,
}

impl RedisConn {
    pub fn new(config: &Config) -> anyhow::Result<RedisConn> {
        let client = redis::Client::open(config.redis_url.expose_secret())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        Ok(RedisConn {
            client,
            manager,
            prefix: config.redis_key_prefix.clone(),
        })
    }

    pub fn connection(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// A connection of its own, for a blocking command (`BLPOP`) that would hold up
    /// everything else on the shared one. `timeout` bounds both the connect and each reply.
    pub async fn dedicated(
        &self,
        timeout: Duration,
    ) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A connection of its own in subscriber mode (live events).
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        self.client.get_async_pubsub().await
    }

    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.connection();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}
