output "security_group_ids" {
  description = "Map of group name (key of var.groups) to security group ID."
  value       = { for name, sg in aws_security_group.this : name => sg.id }
}

output "security_group_ids_by_role" {
  description = "Map of KET role to the list of IDs of the security groups whose roles include it (ordered by group name)."
  value = {
    for role in local.roles : role => [
      for name, g in var.groups : aws_security_group.this[name].id if contains(g.roles, role)
    ]
  }
}

output "security_group_arns" {
  description = "Map of group name (key of var.groups) to security group ARN."
  value       = { for name, sg in aws_security_group.this : name => sg.arn }
}

output "ingress_rule_ids" {
  description = "Map of ingress rule name (key of var.ingress_rules) to security group rule ID (sgr-...)."
  value       = { for name, r in aws_vpc_security_group_ingress_rule.this : name => r.security_group_rule_id }
}

output "egress_rule_ids" {
  description = "Map of egress rule name (key of var.egress_rules) to security group rule ID (sgr-...)."
  value       = { for name, r in aws_vpc_security_group_egress_rule.this : name => r.security_group_rule_id }
}
