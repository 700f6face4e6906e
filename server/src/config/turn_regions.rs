//! `[[calls.turn_servers]]` and `calls.region`: TURN servers per region.

use super::{CallsSection, ConfigError, key_err};
use palaver_signaling::calls::regions::RegionServers;

impl CallsSection {
    /// The regional servers as signaling wants them.
    pub fn region_servers(&self) -> Vec<RegionServers> {
        self.turn_servers
            .iter()
            .map(|e| RegionServers {
                region: e.region.clone(),
                urls: e.urls.clone(),
            })
            .collect()
    }

    /// Regions named, unique, with `turn:` URLs; credentials need the
    /// shared secret.
    pub(super) fn validate_regions(&self, have_secret: bool) -> Result<(), ConfigError> {
        const KEY: &str = "calls.turn_servers";
        let mut seen = Vec::new();
        for e in &self.turn_servers {
            let name = e.region.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(key_err(KEY, "every entry needs a region"));
            }
            if seen.contains(&name) {
                return Err(key_err(KEY, format!("region {:?} listed twice", e.region)));
            }
            seen.push(name);
            if e.urls.is_empty() {
                return Err(key_err(KEY, format!("region {:?} has no urls", e.region)));
            }
            if let Some(bad) = e.urls.iter().find(|u| !is_turn_url(u)) {
                return Err(key_err(KEY, format!("{bad:?} is not a turn: URL")));
            }
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(key_err("calls.region", "must not be empty"));
        }
        if !self.turn_servers.is_empty() && !have_secret {
            return Err(key_err(
                "calls.turn_secret",
                "required when calls.turn_servers is set (or calls.turn_secret_file)",
            ));
        }
        Ok(())
    }
}

fn is_turn_url(u: &str) -> bool {
    u.starts_with("turn:") || u.starts_with("turns:")
}

#[cfg(test)]
mod tests {
    use crate::config::load;

    fn with(toml: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, toml).unwrap();
        let cfg = load(Some(&path), &[]).map_err(|e| e.to_string())?;
        cfg.validate().map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn regions_load_and_bad_entries_name_the_key() {
        let ok = "[calls]\nregion = \"eu\"\nturn_secret = \"s3cret\"\n\
                  [[calls.turn_servers]]\nregion = \"eu\"\nurls = [\"turn:eu.example:3478\"]\n\
                  [[calls.turn_servers]]\nregion = \"us\"\nurls = [\"turns:us.example:5349\"]\n";
        with(ok).unwrap();
        let no_secret = "[[calls.turn_servers]]\nregion = \"eu\"\nurls = [\"turn:a\"]\n";
        assert!(with(no_secret).unwrap_err().contains("calls.turn_secret"));
        let twice = "[calls]\nturn_secret = \"s\"\n\
                     [[calls.turn_servers]]\nregion = \"eu\"\nurls = [\"turn:a\"]\n\
                     [[calls.turn_servers]]\nregion = \"EU\"\nurls = [\"turn:b\"]\n";
        assert!(with(twice).unwrap_err().contains("listed twice"));
        let http = "[calls]\nturn_secret = \"s\"\n\
                    [[calls.turn_servers]]\nregion = \"eu\"\nurls = [\"http://a\"]\n";
        assert!(with(http).unwrap_err().contains("calls.turn_servers"));
    }
}
