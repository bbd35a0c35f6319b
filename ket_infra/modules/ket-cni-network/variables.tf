variable "cluster_name" {
  description = "Name of the KET cluster. Security groups are named \"<cluster_name>-<group>\"."
  type        = string

  validation {
    condition     = length(var.cluster_name) > 0 && length(var.cluster_name) <= 200
    error_message = "cluster_name must be 1 to 200 characters long."
  }

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", var.cluster_name)) && !startswith(lower(var.cluster_name), "sg-")
    error_message = "cluster_name must start with a letter or digit, use only letters, digits, '.', '_' and '-', and must not start with \"sg-\" (got \"${var.cluster_name}\")."
  }
}

variable "vpc_id" {
  description = "ID of the VPC the cluster's nodes run in; every security group is created in it."
  type        = string

  validation {
    condition     = can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID such as \"vpc-0123456789abcdef0\" (got \"${var.vpc_id}\")."
  }
}

variable "tags" {
  description = "Tags added to every security group and rule. The module's own Name and ket-infra/group tags win over keys of the same name."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "groups" {
  description = <<-EOT
    Security groups to create, keyed by group name (for example "etcd", "etcd-master", "worker").
    Each becomes an aws_security_group named "<cluster_name>-<group>" in vpc_id.
    roles: the KET roles held by the nodes of this group (etcd, master, worker, ingress, storage).
    description: the group's description (changing it replaces the group).
  EOT
  type = map(object({
    roles       = list(string)
    description = string
  }))
  nullable = false

  validation {
    condition     = alltrue([for name in keys(var.groups) : can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", name)) && length(name) <= 50])
    error_message = "Every group name (key of groups) must be at most 50 characters of letters, digits, '.', '_' and '-', starting with a letter or digit; invalid: ${jsonencode([for name in keys(var.groups) : name if !(can(regex("^[A-Za-z0-9][A-Za-z0-9._-]*$", name)) && length(name) <= 50)])}."
  }

  validation {
    condition     = alltrue([for g in values(var.groups) : length(g.roles) > 0 && alltrue([for r in g.roles : length(r) > 0])])
    error_message = "Every group must list at least one non-empty role; offending groups: ${jsonencode([for name, g in var.groups : name if !(length(g.roles) > 0 && alltrue([for r in g.roles : length(r) > 0]))])}."
  }

  validation {
    condition     = alltrue([for g in values(var.groups) : length(g.description) > 0 && length(g.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", g.description))])
    error_message = "Every group description must be 1 to 255 characters from a-z A-Z 0-9 space and ._-:/()#,@[]+=&;{}!$* (AWS's rule); offending groups: ${jsonencode([for name, g in var.groups : name if !(length(g.description) > 0 && length(g.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", g.description)))])}."
  }
}

variable "ingress_rules" {
  description = <<-EOT
    Ingress rules keyed by rule name; each becomes one aws_vpc_security_group_ingress_rule.
    group: the key in groups whose nodes the rule lets traffic reach.
    protocol: "tcp", "udp", "icmp", an IANA protocol number as a string for anything else ("4" IP-in-IP, "50" ESP), or "-1" for all protocols.
    from_port/to_port: the port range for tcp/udp; the ICMP type and code for icmp (-1 = any); leave null for every other protocol.
    Exactly one of cidr (an IPv4 CIDR) or source_group (a key in groups).
    description: the rule's description.
  EOT
  type = map(object({
    group        = string
    protocol     = string
    from_port    = optional(number)
    to_port      = optional(number)
    cidr         = optional(string)
    source_group = optional(string)
    description  = string
  }))
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : (r.cidr == null) != (r.source_group == null)])
    error_message = "Every ingress rule needs exactly one of cidr or source_group; offending rules: ${jsonencode([for k, r in var.ingress_rules : k if(r.cidr == null) == (r.source_group == null)])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : r.cidr == null ? true : can(cidrhost(r.cidr, 0)) && can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", r.cidr))])
    error_message = "Every ingress rule cidr must be an IPv4 CIDR such as \"10.0.0.0/16\"; offending rules: ${jsonencode([for k, r in var.ingress_rules : k if r.cidr == null ? false : !(can(cidrhost(r.cidr, 0)) && can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", r.cidr)))])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : contains(["tcp", "udp", "icmp", "-1"], r.protocol) || (can(regex("^([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$", r.protocol)) && !contains(["1", "6", "17"], r.protocol))])
    error_message = "Every ingress rule protocol must be \"tcp\", \"udp\", \"icmp\", \"-1\" (all) or an IANA protocol number 0-255 as a string other than 1, 6 and 17 (use \"icmp\", \"tcp\", \"udp\"); offending rules: ${jsonencode([for k, r in var.ingress_rules : k if !(contains(["tcp", "udp", "icmp", "-1"], r.protocol) || (can(regex("^([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$", r.protocol)) && !contains(["1", "6", "17"], r.protocol)))])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : contains(["tcp", "udp"], r.protocol) ? (r.from_port != null && r.to_port != null ? r.from_port >= 0 && r.to_port <= 65535 && r.from_port <= r.to_port && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port : false) : true])
    error_message = "Every tcp/udp ingress rule needs integer from_port <= to_port within 0-65535; offending rules: ${jsonencode([for k, r in var.ingress_rules : k if contains(["tcp", "udp"], r.protocol) ? (r.from_port != null && r.to_port != null ? !(r.from_port >= 0 && r.to_port <= 65535 && r.from_port <= r.to_port && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port) : true) : false])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : r.protocol == "icmp" ? (r.from_port != null && r.to_port != null ? r.from_port >= -1 && r.from_port <= 255 && r.to_port >= -1 && r.to_port <= 255 && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port : false) : true])
    error_message = "Every icmp ingress rule needs from_port (ICMP type) and to_port (ICMP code), integers from -1 (any) to 255; offending rules: ${jsonencode([for k, r in var.ingress_rules : k if r.protocol == "icmp" ? (r.from_port != null && r.to_port != null ? !(r.from_port >= -1 && r.from_port <= 255 && r.to_port >= -1 && r.to_port <= 255 && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port) : true) : false])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : contains(["tcp", "udp", "icmp"], r.protocol) ? true : r.from_port == null && r.to_port == null])
    error_message = "Ingress rules for \"-1\" (all) or a numbered protocol cover every port: leave from_port and to_port null; offending rules: ${jsonencode([for k, r in var.ingress_rules : k if !contains(["tcp", "udp", "icmp"], r.protocol) && !(r.from_port == null && r.to_port == null)])}."
  }

  validation {
    condition     = alltrue([for r in values(var.ingress_rules) : length(r.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", r.description))])
    error_message = "Every ingress rule description must be at most 255 characters from a-z A-Z 0-9 space and ._-:/()#,@[]+=&;{}!$* (AWS's rule); offending rules: ${jsonencode([for k, r in var.ingress_rules : k if !(length(r.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", r.description)))])}."
  }

  validation {
    condition     = length(distinct([for r in values(var.ingress_rules) : [r.group, r.protocol, r.from_port, r.to_port, r.cidr, r.source_group]])) == length(var.ingress_rules)
    error_message = "Two ingress rules allow the same thing (same group, protocol, ports and source); AWS rejects duplicates (InvalidPermission.Duplicate). Merge them."
  }
}

variable "egress_rules" {
  description = <<-EOT
    Egress rules keyed by rule name; each becomes one aws_vpc_security_group_egress_rule.
    Terraform's aws_security_group removes AWS's default allow-all egress rule, so every outbound flow must be listed here.
    group: the key in groups whose nodes the rule lets traffic leave.
    protocol, from_port, to_port: as for ingress_rules.
    Exactly one of cidr (an IPv4 CIDR) or destination_group (a key in groups).
    description: the rule's description.
  EOT
  type = map(object({
    group             = string
    protocol          = string
    from_port         = optional(number)
    to_port           = optional(number)
    cidr              = optional(string)
    destination_group = optional(string)
    description       = string
  }))
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : (r.cidr == null) != (r.destination_group == null)])
    error_message = "Every egress rule needs exactly one of cidr or destination_group; offending rules: ${jsonencode([for k, r in var.egress_rules : k if(r.cidr == null) == (r.destination_group == null)])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : r.cidr == null ? true : can(cidrhost(r.cidr, 0)) && can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", r.cidr))])
    error_message = "Every egress rule cidr must be an IPv4 CIDR such as \"10.0.0.0/16\"; offending rules: ${jsonencode([for k, r in var.egress_rules : k if r.cidr == null ? false : !(can(cidrhost(r.cidr, 0)) && can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+/[0-9]+$", r.cidr)))])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : contains(["tcp", "udp", "icmp", "-1"], r.protocol) || (can(regex("^([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$", r.protocol)) && !contains(["1", "6", "17"], r.protocol))])
    error_message = "Every egress rule protocol must be \"tcp\", \"udp\", \"icmp\", \"-1\" (all) or an IANA protocol number 0-255 as a string other than 1, 6 and 17 (use \"icmp\", \"tcp\", \"udp\"); offending rules: ${jsonencode([for k, r in var.egress_rules : k if !(contains(["tcp", "udp", "icmp", "-1"], r.protocol) || (can(regex("^([0-9]|[1-9][0-9]|1[0-9][0-9]|2[0-4][0-9]|25[0-5])$", r.protocol)) && !contains(["1", "6", "17"], r.protocol)))])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : contains(["tcp", "udp"], r.protocol) ? (r.from_port != null && r.to_port != null ? r.from_port >= 0 && r.to_port <= 65535 && r.from_port <= r.to_port && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port : false) : true])
    error_message = "Every tcp/udp egress rule needs integer from_port <= to_port within 0-65535; offending rules: ${jsonencode([for k, r in var.egress_rules : k if contains(["tcp", "udp"], r.protocol) ? (r.from_port != null && r.to_port != null ? !(r.from_port >= 0 && r.to_port <= 65535 && r.from_port <= r.to_port && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port) : true) : false])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : r.protocol == "icmp" ? (r.from_port != null && r.to_port != null ? r.from_port >= -1 && r.from_port <= 255 && r.to_port >= -1 && r.to_port <= 255 && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port : false) : true])
    error_message = "Every icmp egress rule needs from_port (ICMP type) and to_port (ICMP code), integers from -1 (any) to 255; offending rules: ${jsonencode([for k, r in var.egress_rules : k if r.protocol == "icmp" ? (r.from_port != null && r.to_port != null ? !(r.from_port >= -1 && r.from_port <= 255 && r.to_port >= -1 && r.to_port <= 255 && floor(r.from_port) == r.from_port && floor(r.to_port) == r.to_port) : true) : false])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : contains(["tcp", "udp", "icmp"], r.protocol) ? true : r.from_port == null && r.to_port == null])
    error_message = "Egress rules for \"-1\" (all) or a numbered protocol cover every port: leave from_port and to_port null; offending rules: ${jsonencode([for k, r in var.egress_rules : k if !contains(["tcp", "udp", "icmp"], r.protocol) && !(r.from_port == null && r.to_port == null)])}."
  }

  validation {
    condition     = alltrue([for r in values(var.egress_rules) : length(r.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", r.description))])
    error_message = "Every egress rule description must be at most 255 characters from a-z A-Z 0-9 space and ._-:/()#,@[]+=&;{}!$* (AWS's rule); offending rules: ${jsonencode([for k, r in var.egress_rules : k if !(length(r.description) <= 255 && can(regex("^[A-Za-z0-9 ._\\-:/()#,@\\[\\]+=&;{}!$*]*$", r.description)))])}."
  }

  validation {
    condition     = length(distinct([for r in values(var.egress_rules) : [r.group, r.protocol, r.from_port, r.to_port, r.cidr, r.destination_group]])) == length(var.egress_rules)
    error_message = "Two egress rules allow the same thing (same group, protocol, ports and destination); AWS rejects duplicates (InvalidPermission.Duplicate). Merge them."
  }
}

variable "attachments" {
  description = <<-EOT
    Security group attachments keyed by node host name; each adds the group (a key in groups) to the node's network interface
    (network_interface_id, e.g. the instance's primary ENI) with aws_network_interface_sg_attachment. The interface keeps its other groups.
  EOT
  type = map(object({
    group                = string
    network_interface_id = string
  }))
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for a in values(var.attachments) : can(regex("^eni-[0-9a-f]+$", a.network_interface_id))])
    error_message = "Every attachment's network_interface_id must be an ENI ID such as \"eni-0123456789abcdef0\"; offending nodes: ${jsonencode([for k, a in var.attachments : k if !can(regex("^eni-[0-9a-f]+$", a.network_interface_id))])}."
  }

  validation {
    condition     = length(distinct([for a in values(var.attachments) : [a.group, a.network_interface_id]])) == length(var.attachments)
    error_message = "The same group is attached to the same network interface twice; keep one attachment per (group, interface)."
  }
}
