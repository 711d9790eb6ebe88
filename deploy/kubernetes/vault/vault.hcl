# Vault in HA with integrated storage (raft), three replicas of the
# StatefulSet "vault". The API and cluster addresses come from the
# environment (VAULT_API_ADDR, VAULT_CLUSTER_ADDR), set per pod. TLS uses the
# Secret "vault-tls" (tls.crt, tls.key, ca.crt), which you create.
ui            = true
disable_mlock = true

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/vault/tls/tls.crt"
  tls_key_file    = "/vault/tls/tls.key"
  tls_client_ca_file = "/vault/tls/ca.crt"
}

storage "raft" {
  path = "/vault/data"

  retry_join {
    leader_api_addr     = "https://vault-0.vault-internal:8200"
    leader_ca_cert_file = "/vault/tls/ca.crt"
  }
  retry_join {
    leader_api_addr     = "https://vault-1.vault-internal:8200"
    leader_ca_cert_file = "/vault/tls/ca.crt"
  }
  retry_join {
    leader_api_addr     = "https://vault-2.vault-internal:8200"
    leader_ca_cert_file = "/vault/tls/ca.crt"
  }
}

service_registration "kubernetes" {}
