//! Organizations, users and memberships: the endpoints, the role rules and
//! tenant isolation (another tenant's resource is a `404`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use boardroom_tests::{SendExpect, TestApp, expect_error, expect_status};
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn bootstrap_an_organization_and_its_users() {
    let app = TestApp::spawn().await;
    // A fresh identity (no profile yet) creates an organization and owns it.
    let founder = Uuid::new_v4();
    let token = app.token_for(founder);
    let org = app.create_org(&token, "acme-board").await;
    assert_eq!(org["name"], "Org acme-board");
    assert_eq!(org["slug"], "acme-board");
    let org_id = org["id"].as_str().unwrap();

    let body = app
        .get(&format!("/v1/organizations/{org_id}"), Some(&token))
        .expect_status(200)
        .await;
    assert_eq!(body["success"], true);
    assert_eq!(body["data"]["id"], org_id);
    assert!(body["data"]["createdAt"].is_string());

    // The owner creates a board member and reads it back.
    let user = app
        .create_user(&token, org_id, "Grace@Example.org", "member")
        .await;
    assert_eq!(user["email"], "Grace@Example.org");
    assert_eq!(user["firstName"], "Ada");
    assert_eq!(user["designation"], "Director");
    assert_eq!(user["isActive"], true);
    assert_eq!(
        user["memberships"],
        json!([{"organizationId": org_id, "role": "member"}])
    );
    let user_id = user["id"].as_str().unwrap();
    let response = app
        .get(&format!("/v1/users/{user_id}"), Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_status(response, 200).await["data"]["id"], user_id);

    // Members list shows the founder (no profile) and the member (with one).
    let body = app
        .get(&format!("/v1/organizations/{org_id}/members"), Some(&token))
        .expect_status(200)
        .await;
    let members = body["data"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0]["userId"], founder.to_string());
    assert_eq!(members[0]["role"], "owner");
    assert_eq!(members[1]["email"], "Grace@Example.org");
    assert_eq!(body["data"]["pagination"]["total"], 2);
    assert_eq!(body["data"]["pagination"]["hasMore"], false);
}

#[tokio::test]
async fn duplicate_slug_and_case_insensitive_email_are_409() {
    let app = TestApp::spawn().await;
    let (token, org) = app.owner_with_org("acme").await;
    app.post_json(
        "/v1/organizations",
        &token,
        &json!({"name": "Again", "slug": "acme"}),
    )
    .expect_error(409, "conflict")
    .await;

    app.create_user(&token, &org, "ada@example.org", "member")
        .await;
    let error = app
        .post_json(
            "/v1/users",
            &token,
            &json!({"email": "ADA@Example.ORG", "firstName": "A", "lastName": "B",
                    "organizationId": org, "role": "viewer"}),
        )
        .expect_error(409, "conflict")
        .await;
    assert!(error["message"].as_str().unwrap().contains("email"));

    // Changing another user's email to a taken one (any case) is also a conflict.
    let other = app
        .create_user(&token, &org, "bob@example.org", "member")
        .await;
    app.patch_json(
        &format!("/v1/users/{}", other["id"].as_str().unwrap()),
        &token,
        &json!({"email": "Ada@EXAMPLE.org"}),
    )
    .expect_error(409, "conflict")
    .await;
}

#[tokio::test]
async fn invalid_fields_are_422_naming_the_field() {
    let app = TestApp::spawn().await;
    let (token, org) = app.owner_with_org("acme").await;
    let error = app
        .post_json(
            "/v1/organizations",
            &token,
            &json!({"name": "X", "slug": "Not A Slug"}),
        )
        .expect_error(422, "validation_failed")
        .await;
    assert_eq!(error["field"], "slug");

    let error = app
        .post_json(
            "/v1/users",
            &token,
            &json!({"email": "nope", "firstName": "A", "lastName": "B",
                    "organizationId": org, "role": "member"}),
        )
        .expect_error(422, "validation_failed")
        .await;
    assert_eq!(error["field"], "email");

    let response = app
        .post_json(
            "/v1/users",
            &token,
            &json!({"email": "a@b.org", "firstName": "   ", "lastName": "B",
                    "organizationId": org, "role": "member"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 422, "validation_failed").await["field"],
        "firstName"
    );

    // PostgreSQL cannot store NUL: refused up front, never a 500.
    let response = app
        .post_json(
            "/v1/organizations",
            &token,
            &json!({"name": "A\u{0}B", "slug": "nul"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_error(response, 422, "validation_failed").await["field"],
        "name"
    );
}

#[tokio::test]
async fn another_tenants_resources_are_404() {
    let app = TestApp::spawn().await;
    let (owner_a, org_a) = app.owner_with_org("tenant-a").await;
    let (owner_b, org_b) = app.owner_with_org("tenant-b").await;
    let (user_a, _) = app.member(&owner_a, &org_a, "member").await;
    let (user_b, _) = app.member(&owner_b, &org_b, "member").await;

    // Owner B cannot see, change or delete tenant A's user, nor see org A.
    app.get(&format!("/v1/users/{user_a}"), Some(&owner_b))
        .expect_error(404, "not_found")
        .await;
    app.patch_json(
        &format!("/v1/users/{user_a}"),
        &owner_b,
        &json!({"firstName": "Mallory"}),
    )
    .expect_error(404, "not_found")
    .await;
    app.delete(&format!("/v1/users/{user_a}"), &owner_b)
        .expect_error(404, "not_found")
        .await;
    app.get(&format!("/v1/organizations/{org_a}"), Some(&owner_b))
        .expect_error(404, "not_found")
        .await;
    app.get(
        &format!("/v1/organizations/{org_a}/members"),
        Some(&owner_b),
    )
    .expect_error(404, "not_found")
    .await;
    // Nor add members to org A, nor create users in it.
    app.post_json(
        &format!("/v1/organizations/{org_a}/members"),
        &owner_b,
        &json!({"userId": user_b, "role": "admin"}),
    )
    .expect_error(404, "not_found")
    .await;
    app.post_json(
        "/v1/users",
        &owner_b,
        &json!({"email": "spy@example.org", "firstName": "S", "lastName": "Py",
                    "organizationId": org_a, "role": "admin"}),
    )
    .expect_error(404, "not_found")
    .await;

    // Tenant A's user is untouched.
    let response = app
        .get(&format!("/v1/users/{user_a}"), Some(&owner_a))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(response, 200).await["data"]["firstName"],
        "Ada"
    );
}

#[tokio::test]
async fn a_user_in_two_orgs_shows_only_shared_memberships() {
    let app = TestApp::spawn().await;
    let (owner_a, org_a) = app.owner_with_org("alpha").await;
    let (owner_b, org_b) = app.owner_with_org("beta").await;
    let (user, _) = app.member(&owner_a, &org_a, "member").await;
    // Operator adds the user to org B as well.
    app.post_json(
        &format!("/v1/organizations/{org_b}/members"),
        &app.service_token(),
        &json!({"userId": user, "role": "viewer"}),
    )
    .expect_status(201)
    .await;

    let body = app
        .get(&format!("/v1/users/{user}"), Some(&owner_b))
        .expect_status(200)
        .await;
    assert_eq!(
        body["data"]["memberships"],
        json!([{"organizationId": org_b, "role": "viewer"}]),
        "owner B must not learn about org A"
    );
    let response = app
        .get(&format!("/v1/users/{user}"), Some(&app.service_token()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(response, 200).await["data"]["memberships"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn viewers_read_only() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;
    let (viewer, viewer_token) = app.member(&owner, &org, "viewer").await;
    let (member, _) = app.member(&owner, &org, "member").await;

    // Reads are fine.
    app.get(&format!("/v1/organizations/{org}"), Some(&viewer_token))
        .expect_status(200)
        .await;
    app.get(&format!("/v1/users/{member}"), Some(&viewer_token))
        .expect_status(200)
        .await;

    // Writes to others, creating users, adding members: 403.
    app.patch_json(
        &format!("/v1/users/{member}"),
        &viewer_token,
        &json!({"lastName": "X"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.post_json(
        "/v1/users",
        &viewer_token,
        &json!({"email": "new@example.org", "firstName": "N", "lastName": "U",
                    "organizationId": org, "role": "member"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.post_json(
        &format!("/v1/organizations/{org}/members"),
        &viewer_token,
        &json!({"userId": viewer, "role": "admin"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.delete(&format!("/v1/users/{member}"), &viewer_token)
        .expect_error(403, "forbidden")
        .await;
}

#[tokio::test]
async fn members_write_their_own_record_only() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;
    let (me, my_token) = app.member(&owner, &org, "member").await;
    let (other, _) = app.member(&owner, &org, "member").await;

    let body = app
        .patch_json(
            &format!("/v1/users/{me}"),
            &my_token,
            &json!({"firstName": "Grace", "designation": null}),
        )
        .expect_status(200)
        .await;
    assert_eq!(body["data"]["firstName"], "Grace");
    assert_eq!(
        body["data"]["lastName"], "Lovelace",
        "absent fields are kept"
    );
    assert_eq!(body["data"]["designation"], json!(null), "null clears");

    // Not someone else's, not their own active flag, not deleting anyone.
    app.patch_json(
        &format!("/v1/users/{other}"),
        &my_token,
        &json!({"firstName": "X"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.patch_json(
        &format!("/v1/users/{me}"),
        &my_token,
        &json!({"isActive": false}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.delete(&format!("/v1/users/{other}"), &my_token)
        .expect_error(403, "forbidden")
        .await;
}

#[tokio::test]
async fn admins_manage_users_but_not_ownership() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;
    let (_, admin_token) = app.member(&owner, &org, "admin").await;

    // An admin creates users, adds members, deactivates and deletes users…
    let user = app
        .create_user(&admin_token, &org, "new@example.org", "viewer")
        .await;
    let user_id = user["id"].as_str().unwrap();
    let body = app
        .post_json(
            &format!("/v1/organizations/{org}/members"),
            &admin_token,
            &json!({"userId": user_id, "role": "member"}),
        )
        .expect_status(201)
        .await;
    assert_eq!(body["data"]["role"], "member");
    let response = app
        .patch_json(
            &format!("/v1/users/{user_id}"),
            &admin_token,
            &json!({"isActive": false}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(response, 200).await["data"]["isActive"],
        false
    );

    // …but cannot grant ownership, create owners, or touch an owner.
    app.post_json(
        &format!("/v1/organizations/{org}/members"),
        &admin_token,
        &json!({"userId": user_id, "role": "owner"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.post_json(
        "/v1/users",
        &admin_token,
        &json!({"email": "boss@example.org", "firstName": "B", "lastName": "O",
                    "organizationId": org, "role": "owner"}),
    )
    .expect_error(403, "forbidden")
    .await;
    let (co_owner, _) = app.member(&owner, &org, "owner").await;
    app.delete(&format!("/v1/users/{co_owner}"), &admin_token)
        .expect_error(403, "forbidden")
        .await;

    // Deleting works, and the user is gone.
    let response = app
        .delete(&format!("/v1/users/{user_id}"), &admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    app.get(&format!("/v1/users/{user_id}"), Some(&owner))
        .expect_error(404, "not_found")
        .await;
}

#[tokio::test]
async fn founders_and_invited_identities_create_their_own_profile() {
    let app = TestApp::spawn().await;
    let founder = Uuid::new_v4();
    let founder_token = app.token_for(founder);
    let org = app.create_org(&founder_token, "acme").await;
    let org_id = org["id"].as_str().unwrap();

    // An identity without a profile can be added as a member…
    let invited = Uuid::new_v4();
    let body = app
        .post_json(
            &format!("/v1/organizations/{org_id}/members"),
            &founder_token,
            &json!({"userId": invited, "role": "member"}),
        )
        .expect_status(201)
        .await;
    assert_eq!(body["data"]["userId"], invited.to_string());

    // …and the founder creates their own profile under their own id, keeping
    // the owner role the membership already had.
    let body = app
        .post_json(
            "/v1/users",
            &founder_token,
            &json!({"id": founder, "email": "founder@example.org", "firstName": "F",
                    "lastName": "Ounder", "organizationId": org_id, "role": "member"}),
        )
        .expect_status(201)
        .await;
    assert_eq!(body["data"]["id"], founder.to_string());
    assert_eq!(
        body["data"]["memberships"],
        json!([{"organizationId": org_id, "role": "owner"}])
    );

    // Nobody but an operator chooses someone else's id.
    app.post_json(
        "/v1/users",
        &founder_token,
        &json!({"id": invited, "email": "inv@example.org", "firstName": "I",
                    "lastName": "Nvited", "organizationId": org_id, "role": "member"}),
    )
    .expect_error(403, "forbidden")
    .await;
    app.post_json(
        "/v1/users",
        &app.service_token(),
        &json!({"id": founder, "email": "other@example.org", "firstName": "O",
                    "lastName": "Ther", "organizationId": org_id, "role": "member"}),
    )
    .expect_error(409, "conflict")
    .await;
}

#[tokio::test]
async fn operators_do_everything() {
    let app = TestApp::spawn().await;
    let service = app.service_token();
    let org = app.create_org(&service, "operated").await;
    let org_id = org["id"].as_str().unwrap();
    let user = app
        .create_user(&service, org_id, "chair@example.org", "owner")
        .await;
    let user_id = user["id"].as_str().unwrap();
    let response = app
        .patch_json(
            &format!("/v1/users/{user_id}"),
            &service,
            &json!({"designation": "Chair"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_status(response, 200).await["data"]["designation"],
        "Chair"
    );
    let response = app
        .delete(&format!("/v1/users/{user_id}"), &service)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    app.get(
        &format!("/v1/organizations/{}", Uuid::new_v4()),
        Some(&service),
    )
    .expect_error(404, "not_found")
    .await;
}

#[tokio::test]
async fn deactivated_users_are_locked_out_until_reactivated() {
    let app = TestApp::spawn().await;
    let (owner, org) = app.owner_with_org("acme").await;
    let (member, member_token) = app.member(&owner, &org, "member").await;
    app.patch_json(
        &format!("/v1/users/{member}"),
        &owner,
        &json!({"isActive": false}),
    )
    .expect_status(200)
    .await;
    let error = app
        .get(&format!("/v1/organizations/{org}"), Some(&member_token))
        .expect_error(403, "forbidden")
        .await;
    assert!(error["message"].as_str().unwrap().contains("deactivated"));

    app.patch_json(
        &format!("/v1/users/{member}"),
        &owner,
        &json!({"isActive": true}),
    )
    .expect_status(200)
    .await;
    app.get(&format!("/v1/organizations/{org}"), Some(&member_token))
        .expect_status(200)
        .await;
}
