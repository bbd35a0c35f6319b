locals {
  # tcp, udp and icmp keep the ports (or ICMP type/code) as given; "-1" (all
  # protocols) takes no ports; any other protocol number ignores ports, which
  # the AWS provider wants as -1/-1 (and moto answers HTTP 500 without them).
  ingress_rules = {
    for name, r in var.ingress_rules : name => merge(r, {
      from_port = contains(["tcp", "udp", "icmp"], r.protocol) ? r.from_port : (r.protocol == "-1" ? null : -1)
      to_port   = contains(["tcp", "udp", "icmp"], r.protocol) ? r.to_port : (r.protocol == "-1" ? null : -1)
    })
  }

  egress_rules = {
    for name, r in var.egress_rules : name => merge(r, {
      from_port = contains(["tcp", "udp", "icmp"], r.protocol) ? r.from_port : (r.protocol == "-1" ? null : -1)
      to_port   = contains(["tcp", "udp", "icmp"], r.protocol) ? r.to_port : (r.protocol == "-1" ? null : -1)
    })
  }

  roles = sort(distinct(flatten([for g in values(var.groups) : g.roles])))

  # AWS quota: 60 inbound and 60 outbound IPv4 rules per security group.
  ingress_rule_count = { for name in keys(var.groups) : name => length([for r in values(var.ingress_rules) : r if r.group == name]) }
  egress_rule_count  = { for name in keys(var.groups) : name => length([for r in values(var.egress_rules) : r if r.group == name]) }
}

resource "aws_security_group" "this" {
  for_each = var.groups

  name        = "${var.cluster_name}-${each.key}"
  description = each.value.description
  vpc_id      = var.vpc_id

  # No inline ingress/egress blocks: every rule is its own
  # aws_vpc_security_group_*_rule resource below (never mix the two styles).
  # Terraform removes AWS's default allow-all egress rule from a new group.

  tags = merge(var.tags, {
    Name              = "${var.cluster_name}-${each.key}"
    "ket-infra/group" = each.key
  })

  lifecycle {
    # The name is fixed, so a replacement must delete the old group first.
    create_before_destroy = false
  }
}

resource "aws_vpc_security_group_ingress_rule" "this" {
  for_each = local.ingress_rules

  security_group_id            = try(aws_security_group.this[each.value.group].id, null)
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.from_port
  to_port                      = each.value.to_port
  cidr_ipv4                    = each.value.cidr
  referenced_security_group_id = each.value.source_group == null ? null : try(aws_security_group.this[each.value.source_group].id, null)
  description                  = each.value.description

  tags = merge(var.tags, {
    Name = each.key
  })

  lifecycle {
    precondition {
      condition     = contains(keys(var.groups), each.value.group)
      error_message = "Ingress rule \"${each.key}\": group \"${each.value.group}\" is not a key of var.groups (${join(", ", keys(var.groups))})."
    }
    precondition {
      condition     = each.value.source_group == null ? true : contains(keys(var.groups), each.value.source_group)
      error_message = "Ingress rule \"${each.key}\": source_group \"${coalesce(each.value.source_group, "-")}\" is not a key of var.groups (${join(", ", keys(var.groups))})."
    }
  }
}

resource "aws_vpc_security_group_egress_rule" "this" {
  for_each = local.egress_rules

  security_group_id            = try(aws_security_group.this[each.value.group].id, null)
  ip_protocol                  = each.value.protocol
  from_port                    = each.value.from_port
  to_port                      = each.value.to_port
  cidr_ipv4                    = each.value.cidr
  referenced_security_group_id = each.value.destination_group == null ? null : try(aws_security_group.this[each.value.destination_group].id, null)
  description                  = each.value.description

  tags = merge(var.tags, {
    Name = each.key
  })

  lifecycle {
    precondition {
      condition     = contains(keys(var.groups), each.value.group)
      error_message = "Egress rule \"${each.key}\": group \"${each.value.group}\" is not a key of var.groups (${join(", ", keys(var.groups))})."
    }
    precondition {
      condition     = each.value.destination_group == null ? true : contains(keys(var.groups), each.value.destination_group)
      error_message = "Egress rule \"${each.key}\": destination_group \"${coalesce(each.value.destination_group, "-")}\" is not a key of var.groups (${join(", ", keys(var.groups))})."
    }
  }
}

resource "aws_network_interface_sg_attachment" "this" {
  for_each = var.attachments

  security_group_id    = try(aws_security_group.this[each.value.group].id, null)
  network_interface_id = each.value.network_interface_id

  lifecycle {
    precondition {
      condition     = contains(keys(var.groups), each.value.group)
      error_message = "Attachment \"${each.key}\": group \"${each.value.group}\" is not a key of var.groups (${join(", ", keys(var.groups))})."
    }
  }
}

check "rule_quota" {
  assert {
    condition     = alltrue([for n in values(local.ingress_rule_count) : n <= 60]) && alltrue([for n in values(local.egress_rule_count) : n <= 60])
    error_message = "AWS allows 60 inbound and 60 outbound rules per security group by default; over the quota: ${jsonencode(merge({ for g, n in local.ingress_rule_count : "${g} (ingress)" => n if n > 60 }, { for g, n in local.egress_rule_count : "${g} (egress)" => n if n > 60 }))}."
  }
}
