/**
 * Every MikroORM entity of the catalog API, registered with both pools (the app role and the
 * sign-in service's role). Entities mirror the schema that migrations/ owns; they never create it.
 */
import { User } from '../modules/users/user.entity.ts';
import { Membership } from '../modules/users/membership.entity.ts';
import { Publisher } from '../modules/publishers/publisher.entity.ts';
import { Credential, RecoveryCode } from '../modules/auth/credential.entity.ts';
import { RefreshToken, Session } from '../modules/auth/session.entity.ts';
import { UserToken } from '../modules/auth/user-token.entity.ts';
import { SigningKey } from '../modules/auth/keys/signing-key.entity.ts';
import { DirectoryConfig } from '../modules/directory/directory-config.entity.ts';
import { Work } from '../modules/catalog/work.entity.ts';
import { WorkSongwriter } from '../modules/catalog/work-songwriter.entity.ts';
import { Songwriter } from '../modules/catalog/songwriter.entity.ts';
import { Recording } from '../modules/catalog/recording.entity.ts';
import { Department } from '../modules/publishers/department.entity.ts';
import { Permission, Role, RolePermission } from '../modules/roles/role.entity.ts';
import { Invitation } from '../modules/users/invitation.entity.ts';
import { ApiClient } from '../modules/api-clients/api-client.entity.ts';
import { Plan } from '../modules/accounts/plan.entity.ts';
import { Account } from '../modules/accounts/account.entity.ts';
import { AccountUsage, ApiClientUsage } from '../modules/accounts/usage.entity.ts';
import { AuditEvent } from '../modules/audit/audit-event.entity.ts';

export const ENTITIES = [User, Membership, Publisher, Credential, RecoveryCode, Session, RefreshToken, UserToken, SigningKey, DirectoryConfig, Work, WorkSongwriter, Songwriter, Recording, Department, Role, RolePermission, Permission, Invitation, ApiClient, Plan, Account, AccountUsage, ApiClientUsage, AuditEvent];
